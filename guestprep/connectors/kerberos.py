"""Kerberos initiator credentials for the WinRM connector.

pywinrm's Kerberos auth (pykerberos) never uses the password it is given: it needs a
ticket-granting ticket already in the credential cache, as after ``kinit``. Ansible
runs ``kinit`` into a temporary cache per forked worker; guestprep runs guests in
threads of one process, so it keeps one private *collection* cache (``DIR:``, mode
0700, removed at exit) holding a TGT per principal, and pykerberos picks the right one
by principal name. The password goes to the KDC through GSSAPI in memory, never argv.

Guests without a password use the tickets the admin already has (``kinit`` or a
keytab): those are copied into the private collection when it is first created.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading

from guestprep.errors import ConfigError, ConnectionFailed

_lock = threading.Lock()
_collection: str | None = None   # "DIR:/tmp/guestprep-krb5-XXXX" once created


def principal_for(user: str, where: str) -> str:
    """user@REALM or a bare user (default realm); DOMAIN\\user is NTLM syntax, not Kerberos."""
    if not user:
        raise ConfigError("Kerberos needs a user (user@REALM)", where=where)
    if "\\" in user:
        domain, _, name = user.partition("\\")
        raise ConfigError(f"Kerberos principals are written user@REALM, not {user!r}; "
                          f"try {name}@{domain.upper()}.<your DNS domain> (the realm is usually the AD DNS domain "
                          "in capitals)", where=where)
    if user.count("@") > 1:
        raise ConfigError(f"Kerberos principal {user!r} has more than one '@'", where=where)
    return user


def ensure_initiator_credentials(principal: str, password: str | None, where: str) -> None:
    """Make a usable TGT for ``principal`` visible to pykerberos, or fail clearly."""
    try:
        import gssapi
        import gssapi.raw as graw
    except ImportError:
        raise ConfigError("Kerberos needs the gssapi library (install guestprep[kerberos] on the controller; "
                          "it builds against Debian's libkrb5-dev)", where=where) from None
    name = gssapi.Name(principal, gssapi.NameType.user)
    with _lock:
        collection = _private_collection(gssapi)
        if password is None:
            try:
                # KRB5CCNAME now names the collection: a name lookup searches every cache in it
                creds = gssapi.Credentials(name=name, usage="initiate")
                if creds.lifetime == 0:
                    raise ValueError("expired")
            except Exception:
                raise ConfigError(f"no valid Kerberos ticket for {principal}: run kinit {principal} (or use a "
                                  "keytab) before guestprep, or set credentials.password_env", where=where) from None
            return
        try:
            acquired = graw.acquire_cred_with_password(name, password.encode("utf-8"), usage="initiate")
        except gssapi.exceptions.GSSError as exc:
            raise ConnectionFailed(f"Kerberos: cannot get a ticket for {principal}: {_kdc_reason(exc, principal)}",
                                   where=where) from None
        graw.store_cred_into({"ccache": collection}, acquired.creds, usage="initiate", overwrite=True)


def _private_collection(gssapi) -> str:
    """Create (once per process, or again if someone reset KRB5CCNAME) the private DIR collection."""
    global _collection
    if _collection is not None and os.environ.get("KRB5CCNAME") == _collection and \
            os.path.isdir(_collection[len("DIR:"):]):
        return _collection
    path = tempfile.mkdtemp(prefix="guestprep-krb5-")   # mode 0700
    collection = f"DIR:{path}"
    try:   # keep the admin's own tickets usable (kinit/keytab before guestprep)
        existing = gssapi.Credentials(usage="initiate")
        existing.store(store={"ccache": collection}, usage="initiate", overwrite=True)
    except Exception:
        pass   # no default ticket: nothing to keep
    os.environ["KRB5CCNAME"] = collection
    atexit.register(shutil.rmtree, path, True)
    _collection = collection
    return collection


CLOCK_SKEW = ("Clock skew", "the controller's clock differs too much from the KDC's")


def _explain(text: str, table: tuple[tuple[str, str], ...]) -> str | None:
    return next((reason for needle, reason in table if needle.lower() in text.lower()), None)


def _kdc_reason(exc: Exception, principal: str) -> str:
    """Why the KDC would not give ``principal`` a ticket-granting ticket."""
    text = str(exc)
    realm = principal.rpartition("@")[2] or "the default realm"
    reason = _explain(text, (
        ("Decrypt integrity check failed", "wrong password"),
        ("Preauthentication failed", "wrong password"),
        ("not found in Kerberos database", f"unknown principal {principal}"),
        ("Cannot find KDC", f"no KDC known for realm {realm} (check krb5.conf [realms] or DNS SRV records)"),
        ("Cannot contact any KDC", f"no KDC of realm {realm} answered"),
        CLOCK_SKEW,
        ("password has expired", "the password has expired"),
        ("revoked", "the account is disabled or locked"),
    ))
    return reason or text.rsplit("Minor", 1)[-1].split(":", 1)[-1].strip() or text


def service_ticket_reason(exc: Exception) -> str | None:
    """Why a service ticket for the guest failed (pykerberos raises inside requests); None if not Kerberos."""
    if type(exc).__module__ != "kerberos" and type(exc).__name__ not in ("GSSError", "KerberosExchangeError"):
        return None
    text = str(exc)
    reason = _explain(text, (
        ("not found in Kerberos database", "the KDC has no service principal for this host: address the guest by "
         "the DNS name its HTTP/<name> SPN uses, or set ansible_winrm_kerberos_hostname_override"),
        CLOCK_SKEW,
        ("No credentials", "no ticket for the principal (set credentials.password_env, or run kinit first)"),
        ("credentials cache", "no ticket for the principal (set credentials.password_env, or run kinit first)"),
    ))
    return reason or (text if len(text) < 200 else text[:200] + "...")
