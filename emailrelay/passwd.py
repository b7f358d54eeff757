"""The ``emailrelay-passwd`` console script: encode a password for a secrets file.

One job: read one password and print the form a secrets file stores it in,
as E-MailRelay 2.6's ``emailrelay-passwd`` does (SPEC.md 5.6):

    --hash MD5 (default)   base64 of the 32-byte masked HMAC-MD5 key
    --hash MD5 --dotted    the same 32 bytes as 8 little-endian uint32, decimal, joined by "."
    --hash SHA1 / SHA256   base64 of the 40 / 64-byte masked key
    --hash NONE            xtext of the password (for ``plain`` lines)

The hash name is case-insensitive.  The password is the ``--password``
value (its bytes as given), else the first line of standard input trimmed of
space, TAB, CR and LF at both ends; with ``--base64`` it is then decoded
(strictly: the base64 alphabet, correct padding, no stray bits).  The
masked-key arithmetic is :func:`emailrelay.sasl.mask_key`; this module only
chooses, reads and prints.

Checks run in 2.6's order, so a bad ``--hash`` is reported before standard
input is read.  Output and exit codes (exact 2.6 texts):

* success: one line plus LF on stdout, exit 0;
* ``<prog>: error: <text>`` for each option error, exit 1;
* ``<prog>: too many command-line arguments (the password is read from the
  standard input)``, exit 1;
* ``<prog>: exception: invalid hash function`` (anything but MD5, SHA1,
  SHA256 and NONE), ``<prog>: exception: --dotted only works for md5``,
  ``<prog>: exception: base64 encoding error``, exit 1;
* ``<prog>: invalid password`` for an empty password, exit 1.

Where we differ from 2.6 (for the man page): SHA1 and SHA256 need no TLS
build, so the undocumented ``-t``/``--tls`` and ``-T``/``--tls-config`` are
accepted and ignored; ``-V``/``--version`` is new; the help text is ours.

Not responsible for: the hash arithmetic (:mod:`emailrelay.sasl`), xtext
(:mod:`emailrelay.envelope`), option syntax (:mod:`emailrelay.options`).
"""

from __future__ import annotations

import sys
from typing import BinaryIO

from emailrelay import entry, options

#: ``--hash`` values (upper case) and the :func:`emailrelay.sasl.mask_key` names.
HASHES = {"MD5": "md5", "SHA1": "sha1", "SHA256": "sha256"}

#: What the first line of standard input is trimmed of.
TRIM = b" \t\r\n"

_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


class PasswdError(Exception):
    """``<prog>: exception: <text>``, exit 1 (2.6's wording for these errors)."""


class InvalidPassword(Exception):
    """The password is empty: ``<prog>: invalid password``, exit 1."""


def check_hash(hash_name: str, dotted: bool) -> str:
    """The upper-case hash name, after 2.6's checks.

    Raises:
        PasswdError: ``invalid hash function`` or ``--dotted only works for md5``.
    """
    name = hash_name.upper()
    if name != "NONE" and name not in HASHES:
        raise PasswdError("invalid hash function")
    if dotted and name != "MD5":
        raise PasswdError("--dotted only works for md5")
    return name


def decode_base64(text: bytes) -> bytes:
    """Strict base64 decoding, as 2.6's ``G::Base64::decode(s, true)``.

    Padding is optional, but when present it must make the length a
    multiple of four; a single trailing character or non-zero left-over bits
    are errors.

    Raises:
        PasswdError: ``base64 encoding error``.
    """
    import base64
    import binascii

    body = text.rstrip(b"=")
    pad = len(text) - len(body)
    valid = (
        all(b in _B64_ALPHABET for b in body)
        and len(body) % 4 != 1
        and (pad == 0 or (pad <= 2 and len(text) % 4 == 0))
    )
    if valid:
        try:
            data = base64.b64decode(body + b"=" * (-len(body) % 4), validate=True)
        except (binascii.Error, ValueError):
            data = None
        if data is not None and base64.b64encode(data).rstrip(b"=") == body:
            return data
    raise PasswdError("base64 encoding error")


def encode(password: bytes, hash_name: str = "MD5", *, dotted: bool = False) -> str:
    """The secrets-file form of ``password`` (SPEC.md 5.6).

    Args:
        password: the password bytes (already base64-decoded if need be).
        hash_name: MD5, SHA1, SHA256 or NONE, in any case.
        dotted: the legacy dotted decimal form (MD5 only).

    Raises:
        PasswdError: an unknown hash, or ``dotted`` with another hash.
        InvalidPassword: an empty password.
    """
    name = check_hash(hash_name, dotted)
    if not password:
        raise InvalidPassword()
    if name == "NONE":
        from emailrelay.envelope import xtext_encode

        return xtext_encode(password)
    from emailrelay.sasl import mask_key

    key = mask_key(password, HASHES[name])
    if dotted:
        import struct

        return ".".join(str(word) for word in struct.unpack(f"<{len(key) // 4}I", key))
    import base64

    return base64.b64encode(key).decode("ascii")


def read_password(stream: BinaryIO | None) -> bytes:
    """The first line of ``stream``, trimmed of space, TAB, CR and LF (empty at end of input)."""
    if stream is None:
        return b""
    return stream.readline().strip(TRIM)


def run(prog: str, args: list[str]) -> int:
    """Run with the arguments after argv[0]; returns the exit code."""
    table = options.PASSWD_OPTIONS
    parsed = options.parse(table, args, prog, config_file_allowed=False)
    if parsed.flag("help"):
        return entry.print_help(table, prog, parsed)
    if parsed.errors:
        return entry.usage_errors(prog, parsed.errors, hint=False)
    if parsed.arguments:
        print(
            f"{prog}: too many command-line arguments (the password is read from the standard input)",
            file=sys.stderr,
        )
        return 1
    if parsed.flag("version"):
        return entry.print_version(prog, parsed)
    try:
        dotted = parsed.flag("dotted")
        given_hash = parsed.value("hash")
        hash_name = check_hash("MD5" if given_hash is None else given_hash, dotted)
        given = parsed.value("password")
        if given is not None:
            password = given.encode("utf-8", "surrogateescape")  # the bytes of the argument
        else:
            password = read_password(sys.stdin.buffer if sys.stdin is not None else None)
        if not password:
            raise InvalidPassword()
        if parsed.flag("base64"):
            password = decode_base64(password)
        result = encode(password, hash_name, dotted=dotted)
    except InvalidPassword:
        print(f"{prog}: invalid password", file=sys.stderr)
        return 1
    except PasswdError as e:
        print(f"{prog}: exception: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(result + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``emailrelay-passwd`` console script.

    Args:
        argv: the whole command line including the program name; defaults to
            sys.argv.

    Returns:
        The exit code: 0 printed, 1 error.
    """
    return entry.main(run, argv, "emailrelay-passwd")


if __name__ == "__main__":
    sys.exit(main())
