"""emailrelay-tui: the operator's console (Textual), attached to ``emailrelay supervise`` by its admin socket.

Only this package imports Textual, and nothing here touches the spool: every
fact and every action goes through the admin protocol (admin_protocol.py).
"""
