"""The human rendering of the key commands: escrow, holder, reveal, recover, rotate."""

from __future__ import annotations

from drkit import results as r
from drkit.render import console, render


@render.register
def _keys_escrow(result: r.KeysEscrowResult) -> None:
    out = console()
    for item in result.files:
        out.print(f"share for {item.holder:12} {item.file}")
    out.print(f"any {result.threshold} of {result.holders} recover the password")
    out.print(f"sheet {result.sheet} (signer {result.signer})")


@render.register
def _keys_holder(result: r.KeysHolderResult) -> None:
    console().print(result.recipient)


@render.register
def _keys_reveal(result: r.KeysRevealResult) -> None:
    print(result.words)  # plain: the words go on paper, no markup


@render.register
def _keys_recover(result: r.KeysRecoverResult) -> None:
    console().print(
        f"password rebuilt from {result.shares_used} share(s) into {result.password_file}"
    )


@render.register
def _keys_rotate(result: r.KeysRotateResult) -> None:
    out = console()
    added, removed = result.restic_keys.added, result.restic_keys.removed
    out.print(f"restic key {added[:8]} added, {', '.join(k[:8] for k in removed)} removed")
    out.print(f"new signer {result.signer.new}")
    out.print(f"retired    {result.signer.retired} (verification only)")
    out.print(result.next)
