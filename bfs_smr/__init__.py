"""bfs-smr: two-party channels as a Byzantine-fault-safe replicated state machine.

The public API is re-exported here; the implementation lives in private modules.
``tests/test_public_api.py`` pins these names.
"""

from ._app import StateMachine, reject
from ._channel import TRANSITIONS, Channel, Input, Phase, Role
from ._codec import HASH_SIZE, MAX_MESSAGE_SIZE, decode, encode, hash_bytes
from ._crypto import Ed25519, SignatureScheme, Signer
from ._errors import (
    BfsSmrError,
    CodecError,
    CommandRejected,
    InternalError,
    L1Error,
    LocalError,
    LogVerificationError,
    RemoteViolation,
)
from ._l1 import L1Adapter, L1ChannelInfo, L1ChannelStatus, L1Event, L1EventKind, L1Format
from ._limits import ChannelLimits
from ._messages import (
    ChannelFinalized,
    ChannelOpened,
    CommandCommitted,
    CommandFailed,
    Effect,
    PersistRequest,
    PersistUpdate,
    SendMessage,
    ServeLog,
)
from ._update import ChannelParams, CommandEntry, SignedUpdate, Update, verify_log

__version__ = "0.1.0"

__all__ = [
    "HASH_SIZE",
    "MAX_MESSAGE_SIZE",
    "TRANSITIONS",
    "BfsSmrError",
    "Channel",
    "ChannelFinalized",
    "ChannelLimits",
    "ChannelOpened",
    "ChannelParams",
    "CodecError",
    "CommandCommitted",
    "CommandEntry",
    "CommandFailed",
    "CommandRejected",
    "Ed25519",
    "Effect",
    "Input",
    "InternalError",
    "L1Adapter",
    "L1ChannelInfo",
    "L1ChannelStatus",
    "L1Error",
    "L1Event",
    "L1EventKind",
    "L1Format",
    "LocalError",
    "LogVerificationError",
    "PersistRequest",
    "PersistUpdate",
    "Phase",
    "RemoteViolation",
    "Role",
    "SendMessage",
    "ServeLog",
    "SignatureScheme",
    "SignedUpdate",
    "Signer",
    "StateMachine",
    "Update",
    "__version__",
    "decode",
    "encode",
    "hash_bytes",
    "reject",
    "verify_log",
]
