# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A squid NTLM authentication helper that really checks NTLMv2 responses (the lab's ``NtlmV2Squid``).

squid's own ``ntlm_fake_auth`` takes any password, and its challenge has no target-info block, without which
NTLMv2 clients (cntlm's ``Auth NTLMv2``) refuse to answer. This helper, standard library only (so squid's user
can run it with ``/usr/bin/python3``), sends a challenge with target info and accepts a response only when its
NTLMv2 proof matches the NT hash of the user in the hash file (lines ``DOMAIN\\user:NTHASH``, hex; no password).
NTLMv1 responses are refused. squid's stateful helper protocol: ``YR <type 1>`` -> ``TT <type 2>``, ``KK <type 3>``
-> ``AF <user>`` or ``NA <reason>``.

    /usr/bin/python3 ntlm_helper.py HASH_FILE [NETBIOS_DOMAIN]
"""

from __future__ import annotations

import base64
import hmac
import os
import struct
import sys

SIGNATURE = b"NTLMSSP\x00"
FLAGS = (0x00000001 | 0x00000004 | 0x00000200 | 0x00008000 | 0x00010000 | 0x00080000 | 0x00800000
         | 0x20000000 | 0x80000000)  # unicode, target, NTLM, always sign, domain, ext. security, target info, 128, 56


def md4(data: bytes) -> bytes:
    """RFC 1320 MD4 (OpenSSL 3 no longer offers it to hashlib); only for the NT hash of a lab password."""
    def rotl(value: int, shift: int) -> int:
        value &= 0xFFFFFFFF
        return ((value << shift) | (value >> (32 - shift))) & 0xFFFFFFFF

    message = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", len(data) * 8)
    state = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
    rounds = (
        (lambda x, y, z: (x & y) | (~x & z), 0, (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), (3, 7, 11, 19)),
        (lambda x, y, z: (x & y) | (x & z) | (y & z), 0x5A827999, (0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15),
         (3, 5, 9, 13)),
        (lambda x, y, z: x ^ y ^ z, 0x6ED9EBA1, (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15), (3, 9, 11, 15)),
    )
    for start in range(0, len(message), 64):
        words = struct.unpack("<16I", message[start:start + 64])
        a, b, c, d = state
        for function, constant, order, shifts in rounds:
            for index, word in enumerate(order):
                a = rotl(a + function(b, c, d) + words[word] + constant, shifts[index % 4])
                a, b, c, d = d, a, b, c
        state = [(value + added) & 0xFFFFFFFF for value, added in zip(state, (a, b, c, d))]
    return struct.pack("<4I", *state)


def nt_hash(password: str) -> bytes:
    return md4(password.encode("utf-16-le"))


def _field(message: bytes, offset: int) -> bytes:
    length, _maxlen, start = struct.unpack_from("<HHI", message, offset)
    return message[start:start + length]


def challenge_message(server_challenge: bytes, domain: str) -> bytes:
    """An NTLM CHALLENGE (type 2) naming ``domain``, with the target-info block NTLMv2 clients need."""
    name = domain.encode("utf-16-le")
    computer = "LABPROXY".encode("utf-16-le")
    target_info = b"".join(struct.pack("<HH", av_id, len(value)) + value
                           for av_id, value in ((2, name), (1, computer), (4, name), (3, computer))) + b"\x00" * 4
    header = 48
    return (SIGNATURE + struct.pack("<I", 2) + struct.pack("<HHI", len(name), len(name), header)
            + struct.pack("<I", FLAGS) + server_challenge + b"\x00" * 8
            + struct.pack("<HHI", len(target_info), len(target_info), header + len(name)) + name + target_info)


def verify_authenticate(message: bytes, server_challenge: bytes, hashes: dict[str, bytes],
                        default_domain: str) -> tuple[str | None, str]:
    """(``DOMAIN\\user``, "") when the AUTHENTICATE (type 3) ``message`` proves the user's NT hash, else
    (None, why). A user sent without a domain is looked up in ``default_domain``, as a domain controller does."""
    if message[:8] != SIGNATURE or struct.unpack_from("<I", message, 8)[0] != 3:
        return None, "not an NTLM AUTHENTICATE message"
    flags = struct.unpack_from("<I", message, 60)[0] if len(message) >= 64 else 0
    encoding = "utf-16-le" if flags & 1 else "latin-1"
    response = _field(message, 20)
    domain = _field(message, 28).decode(encoding)
    user = _field(message, 36).decode(encoding)
    login = "%s\\%s" % (domain or default_domain, user)
    known = hashes.get(login.lower())
    if known is None:
        return None, "unknown user"
    if len(response) <= 24:
        return None, "NTLMv1 refused"
    key = hmac.new(known, (user.upper() + domain).encode("utf-16-le"), "md5").digest()
    proof = hmac.new(key, server_challenge + response[16:], "md5").digest()
    if not hmac.compare_digest(proof, response[:16]):
        return None, "wrong password"
    return login, ""


def read_hashes(path: str) -> dict[str, bytes]:
    hashes = {}
    with open(path) as handle:
        for line in handle:
            login, _sep, hexdigest = line.strip().rpartition(":")
            if login:
                hashes[login.lower()] = bytes.fromhex(hexdigest)
    return hashes


def main(argv: list[str]) -> int:
    hashes = read_hashes(argv[1])
    domain = argv[2] if len(argv) > 2 else "CORP"
    server_challenge = b""
    for line in sys.stdin:
        command, _sep, blob = line.strip().partition(" ")
        try:
            message = base64.b64decode(blob)
        except ValueError:
            message = b""
        if command in ("YR", "KK") and message[8:12] == b"\x01\x00\x00\x00":
            server_challenge = os.urandom(8)
            reply = "TT " + base64.b64encode(challenge_message(server_challenge, domain)).decode()
        elif command == "KK" and server_challenge:
            login, why = verify_authenticate(message, server_challenge, hashes, domain)
            reply = "AF %s" % login if login else "NA %s" % why
            server_challenge = b""
        else:
            reply = "BH unexpected %s" % (command or "empty line")
        sys.stdout.write(reply + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
