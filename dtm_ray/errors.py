"""The two error families of dtm-ray, never confused (as in h11).

- ``LocalError``: *you* misused the API or the configuration. Raised to the caller; fix the call.
- ``RemoteProtocolError``: a *peer* (replica, participant, client, or the network) sent something
  wrong. A correct party never crashes on one: it rejects the input, counts it against the
  sender, and, where the input is provable misbehaviour, keeps it as evidence.
"""

from __future__ import annotations


class DtmError(Exception):
    """Base of every error dtm-ray raises on purpose."""


class LocalError(DtmError):
    """The caller misused the API."""


class ConfigError(LocalError, ValueError):
    """A configuration value is invalid; the message names the parameter and what is allowed."""


class RemoteProtocolError(DtmError):
    """A peer sent something that a correct peer never sends."""


class DecodeError(RemoteProtocolError):
    """Bytes that are not a well-formed message: wrong type, missing field, unknown kind,
    oversized field, trailing bytes."""


class AuthError(RemoteProtocolError):
    """A message whose MAC, signature or authenticator does not verify, or whose sender is unknown."""


class EncodeError(LocalError):
    """A message built locally cannot be encoded (a bug in the caller, not a peer's fault)."""
