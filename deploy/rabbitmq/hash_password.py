#!/usr/bin/env python3
"""Print a RabbitMQ password hash (rabbit_password_hashing_sha256) for definitions.json.

    python3 deploy/rabbitmq/hash_password.py 'the-password'
    python3 deploy/rabbitmq/hash_password.py --check 'the-password' 'BASE64HASH'

Format: base64(salt || sha256(salt || utf8(password))) with a 4-byte random salt, as
rabbit_password:hash/2 computes it. Put the output in the user's "password_hash" and set
"hashing_algorithm": "rabbit_password_hashing_sha256".
"""

import base64
import hashlib
import os
import sys


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = os.urandom(4) if salt is None else salt
    digest = hashlib.sha256(salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def check_password(password: str, password_hash: str) -> bool:
    raw = base64.b64decode(password_hash, validate=True)
    return len(raw) == 36 and hash_password(password, raw[:4]) == password_hash


def main(argv: list[str]) -> int:
    if len(argv) == 2:
        print(hash_password(argv[1]))
        return 0
    if len(argv) == 4 and argv[1] == "--check":
        ok = check_password(argv[2], argv[3])
        print("match" if ok else "no match")
        return 0 if ok else 1
    print(__doc__.strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
