"""Measure what authentication costs on this machine, to choose MACs or signatures by numbers.

    python -m benchmarks.crypto_cost

Prints JSON: microseconds per Ed25519 sign and verify, per HMAC-SHA256, per SHA-256, for a
message of typical size, and the per-request client-authentication cost of each scheme at n = 4.
"""

from __future__ import annotations

import json
import os
import time

from dtm_ray.crypto import generate_keys


def per_call_us(fn, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e6


def main(size: int = 256, repeat: int = 2000) -> dict:
    replicas = ["R0", "R1", "R2", "R3"]
    keys = generate_keys(replicas + ["alice"], seed=0)
    alice = keys["alice"]
    body = os.urandom(size)
    sig = alice.sign(body)
    auth = alice.authenticator(replicas, body)
    from dtm_ray.crypto import digest

    result = {
        "message_bytes": size,
        "ed25519_sign_us": per_call_us(lambda: alice.sign(body), repeat),
        "ed25519_verify_us": per_call_us(lambda: keys["R0"].verify("alice", body, sig), repeat),
        "hmac_sha256_us": per_call_us(lambda: alice.mac("R0", body), repeat * 5),
        "sha256_us": per_call_us(lambda: digest(body), repeat * 5),
        "hmac_authenticator_n4_us": per_call_us(lambda: alice.authenticator(replicas, body), repeat),
        "hmac_authenticator_check_us": per_call_us(
            lambda: keys["R1"].check_authenticator("alice", body, auth, 1), repeat * 5),
    }
    n = len(replicas)
    result["client_auth_cpu_per_request_us"] = {
        "ed25519": result["ed25519_sign_us"] + n * result["ed25519_verify_us"],
        "hmac": result["hmac_authenticator_n4_us"] + n * result["hmac_authenticator_check_us"],
    }
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
