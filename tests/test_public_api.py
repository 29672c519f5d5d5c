"""Pin the public API: adding or removing a name is a deliberate, reviewed change."""

import bfs_smr

PUBLIC = {
    "BfsSmrError", "Channel", "ChannelLimits", "ChannelFinalized", "ChannelOpened", "ChannelParams",
    "CodecError", "CommandCommitted", "CommandEntry", "CommandFailed", "CommandRejected",
    "Ed25519", "Effect", "HASH_SIZE", "Input", "InternalError", "L1Adapter", "L1ChannelInfo",
    "L1ChannelStatus", "L1Error", "L1Event", "L1EventKind", "L1Format", "LocalError",
    "LogVerificationError", "MAX_MESSAGE_SIZE", "PersistRequest", "PersistUpdate", "Phase",
    "RemoteViolation", "Role", "SendMessage", "ServeLog", "SignatureScheme", "SignedUpdate",
    "Signer", "StateMachine", "TRANSITIONS", "Update", "__version__", "decode", "encode",
    "hash_bytes", "reject", "verify_log",
}  # fmt: skip


def test_public_names_are_pinned():
    assert set(bfs_smr.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(bfs_smr, name)


def test_errors_say_who_is_at_fault():
    assert issubclass(bfs_smr.LocalError, bfs_smr.BfsSmrError)
    assert issubclass(bfs_smr.RemoteViolation, bfs_smr.BfsSmrError)
    assert not issubclass(bfs_smr.RemoteViolation, bfs_smr.LocalError)
    err = bfs_smr.RemoteViolation("bad", recourse=None)
    assert err.reason == "bad" and err.recourse is None


def test_core_modules_do_no_io():
    """The sans-IO core imports nothing that touches sockets, files, clocks or threads."""
    import ast
    from pathlib import Path

    banned = {
        "socket",
        "asyncio",
        "os",
        "time",
        "threading",
        "random",
        "subprocess",
        "io",
        "pathlib",
        "sqlite3",
    }
    core = Path(bfs_smr.__file__).parent
    for path in core.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "io" and [a.name for a in node.names] == ["BytesIO"]:
                    continue  # an in-memory buffer, no I/O
                names = [node.module.split(".")[0]]
            assert not (set(names) & banned), f"{path.name} imports {names}"
