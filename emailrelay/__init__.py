"""emailrelay: a policy-free SMTP store-and-forward relay compatible with E-MailRelay 2.6.

This package is the core: it never imports textual (the TUI lives in
emailrelay.tui and talks to the core only through the admin protocol).
"""

__version__ = "0.1.0"

#: The E-MailRelay release whose files, protocols and command line we follow.
COMPATIBLE_VERSION = "2.6"
