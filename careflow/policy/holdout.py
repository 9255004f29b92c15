"""The holdout split: which customers a campaign leaves alone, on purpose, to measure itself.

Every campaign keeps a share of the customers it would contact (default
10%, ``CAREFLOW_HOLDOUT``, ``policy: {holdout: ...}`` in campaign.yaml) out
of each occasion. Who is held out is a fixed property of the ledger key
(campaign, customer, occasion): a SHA-256 of the three, read as a number in
[0, 1), compared with the share. So the split

- is the same on every run, retry, process and database (Python's ``hash()``
  is salted per process and could not be used);
- is fresh for each occasion: a customer held out of this year's birthday
  greeting is drawn again for next year's, so nobody is left out for good;
- is independent of everything the policy looks at (consent, channel, time
  zone, id order), which is what makes the two groups comparable.

The policy table asks it after the rules that decide whether the customer
can be contacted at all (consent, contact points, suppression) and before
the send time (careflow/policy/__init__.py, docs/policy.md says why).
"""

from __future__ import annotations

import hashlib

#: the draw is the first 8 bytes of the digest: 2**64 equally likely values
_SCALE = float(2**64)


def holdout_draw(campaign: str, customer_id: int, occasion: str) -> float:
    """A number in [0, 1), uniform over customers and the same wherever it is computed."""
    key = f"{campaign}\x1f{customer_id}\x1f{occasion}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / _SCALE
