"""The configuration form's text round trip (emailrelay/tui/config_editor.py), without a screen."""

from __future__ import annotations

from emailrelay.tui.config_editor import apply_form, form_options, read_form_values

TEXT = "# my relay\nspool-dir /var/spool/emailrelay\nport 25\nlog\nout-port 26\nfilter /a\nfilter /b\nremote-clients=no\n"


def test_values_are_read_from_the_text():
    assert read_form_values(TEXT) == {"spool-dir": "/var/spool/emailrelay", "port": "25", "log": True,
                                      "remote-clients": False}


def test_changes_replace_remove_and_append_lines_and_keep_the_rest():
    text = apply_form(TEXT, {"port": "587", "log": False, "verbose": True, "domain": "mail.example.com"})
    assert text == ("# my relay\nspool-dir /var/spool/emailrelay\nport 587\nout-port 26\nfilter /a\nfilter /b\n"
                    "remote-clients=no\nverbose\ndomain mail.example.com\n")


def test_repeatable_and_hidden_options_are_not_in_the_form():
    names = {o.name for o in form_options()}
    assert "filter" not in names and "pid-file" not in names and "help" not in names
    assert {"port", "spool-dir", "forward-to", "log", "pop"} <= names
