"""`ame-api rotate-secrets-key`: re-encrypt every stored secret under the active key.

Rotation: add the new key to AME_SECRETS_KEYS, make it AME_SECRETS_ACTIVE_KEY (new values use it at once), run
this command, then remove the old key. Until the command has run, values under the old key still decrypt.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from ame_api.secrets.cipher import KeyUnavailable, SecretCipher
from ame_api.secrets.service import rotate
from ame_api.settings import ApiSettings
from ame_platform.db.pool import create_pool


async def rotate_all(settings: ApiSettings) -> int:
    cipher = SecretCipher(settings.secrets.key_bytes(), settings.secrets.active_key)
    pool = await create_pool(settings.postgres)
    try:
        return await rotate(pool, cipher)
    finally:
        await pool.close()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="ame-api rotate-secrets-key", description=__doc__)
    parser.parse_args(argv)
    try:
        settings = ApiSettings()
    except ValidationError as exc:
        print(f"ame-api: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    try:
        count = asyncio.run(rotate_all(settings))
    except KeyUnavailable as exc:
        print(f"ame-api: {exc}", file=sys.stderr)
        return 1
    print(f"ame-api: re-encrypted {count} secret(s) under key {settings.secrets.active_key!r}")
    return 0
