"""Apps bundled with bfs-smr: payments, counter, tictactoe.

They are found through the ``bfs_smr.apps`` entry points, exactly like third-party apps.
"""
