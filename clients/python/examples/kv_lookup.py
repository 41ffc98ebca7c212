#!/usr/bin/env python3
"""Lends a guest a key-value store that lives in this Python process.

The guest's host call `kv_get(key :string) -> string` is answered by the
async function below, over the same RPC connection as the call: sandpoold
forwards the host calls it does not implement itself to the capability the
call carries, and resumes the guest with the reply. A missing key raises,
and the guest sees a failed host call carrying the message.

    kv_lookup.py --connect 127.0.0.1:7300 --token TOKEN probe call_host kv_get apples

(`probe` is the test guest whose `call_host(name, arg)` makes the host call
`name(arg)` and returns the reply.)
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sandpool_client as sp  # noqa: E402  (found through the line above)

INVENTORY = {"apples": "12", "pears": "7", "plums": "0"}


async def lookup(connect: str, token: str, guest: str, function: str, args: list[str]) -> int:
    lookups: list[str] = []

    async def kv_get(key: str) -> str:
        lookups.append(key)
        if key not in INVENTORY:
            raise LookupError(f"no key '{key}' in the inventory")
        return INVENTORY[key]

    async with await sp.connect(connect) as conn:
        tenant = await conn.login(token)
        try:
            ok = await tenant.call(guest, function, args, host_functions={"kv_get": kv_get})
        except sp.CallFailed as e:
            print(f"call failed: {e}", file=sys.stderr)
            return 1
    print(f"{function}{tuple(args)} = {sp.format_value(ok.value)}")
    print(f"served {len(lookups)} lookup(s): {', '.join(lookups)}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connect", default=os.environ.get("SANDPOOL_CONNECT") or sp.DEFAULT_CONNECT)
    p.add_argument("--token", default=os.environ.get("SANDPOOL_TOKEN"), required="SANDPOOL_TOKEN" not in os.environ)
    p.add_argument("guest")
    p.add_argument("function")
    p.add_argument("args", nargs="*")
    a = p.parse_args()
    return sp.run(lookup(a.connect, a.token, a.guest, a.function, a.args))


if __name__ == "__main__":
    sys.exit(main())
