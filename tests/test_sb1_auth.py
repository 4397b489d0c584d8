"""The integrator's credentials, the JWT client assertion and the shared token cache."""
import datetime as dt
import subprocess
import sys

import jwt
import pytest
from conftest import ROOT
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from clients.sb1 import Credentials, SB1Client, TokenProvider
from errors import AuthError

TOKEN_URL = "https://login.example/connect/token"


@pytest.fixture(scope="module")
def key_and_cert():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "moment-sb1 test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    return key, cert


def test_pkcs12_with_password_signs_a_valid_assertion(tmp_path, key_and_cert):
    key, cert = key_and_cert
    p12 = tmp_path / "client.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"client", key, cert, None, serialization.BestAvailableEncryption(b"pw-secret")))
    creds = Credentials.load("client-1", p12_file=str(p12), p12_password="pw-secret")
    form = creds.token_form(TOKEN_URL)
    assert form["grant_type"] == "client_credentials" and form["scope"] == "AppFramework"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    claims = jwt.decode(form["client_assertion"], cert.public_key(), algorithms=["RS256"], audience=TOKEN_URL)
    assert claims["iss"] == claims["sub"] == "client-1"
    assert claims["exp"] - claims["iat"] == 300 and claims["jti"]
    assert jwt.get_unverified_header(form["client_assertion"])["x5t"] == creds.x5t
    assert "pw-secret" not in repr(creds) and "client_secret" not in form
    # a fresh jti every time: the identity server refuses a replayed assertion
    assert jwt.decode(creds.token_form(TOKEN_URL)["client_assertion"], options={"verify_signature": False})["jti"] != claims["jti"]


def test_pem_key_and_client_secret(tmp_path, key_and_cert):
    key, _ = key_and_cert
    pem = tmp_path / "k.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    assert "client_assertion" in Credentials.load("c", key_file=str(pem)).token_form(TOKEN_URL)
    form = Credentials.load("c", client_secret="s").token_form(TOKEN_URL)
    assert form["client_secret"] == "s" and "client_assertion" not in form
    with pytest.raises(ValueError, match="need a private key"):
        Credentials.load("c")


def test_token_shared_between_providers_and_refreshed_on_401(sandbox, r, rsa_key):
    from conftest import CLIENT_ID, COMPANY_KEYS
    creds = Credentials.load(CLIENT_ID, key_file=str(rsa_key[0]))
    one = TokenProvider(sandbox.token_url, creds, redis_client=r, cache_key="msb1test:sb1-token")
    two = TokenProvider(sandbox.token_url, creds, redis_client=r, cache_key="msb1test:sb1-token")
    token = one.token()
    assert two.token() == token and sandbox.sb1.token_requests == 1
    client = SB1Client(sandbox.sb1_url, COMPANY_KEYS["acme"], two)
    sandbox.sb1.revoke_tokens()
    assert [c["Code"] for c in client.query("currencycodes", filter="Code eq 'NOK'")] == ["NOK"]
    assert sandbox.sb1.token_requests == 2
    one.invalidate(token)          # the other process meets its own 401: it takes the new token from Redis
    assert one.token() == two.token() != token and sandbox.sb1.token_requests == 2
    # a wrong company key is refused: no falling back to some other company
    other = SB1Client(sandbox.sb1_url, "11111111-2222-3333-4444-555555555555", two)
    with pytest.raises(AuthError, match="company key refused"):
        other.query("customers")


def test_a_process_killed_while_fetching_a_token_holds_up_the_others_only_briefly(
        sandbox, r, rsa_key, redis_server):
    """The token lock lasts about as long as a fetch may: the HTTP timeouts plus 5 s."""
    import time

    from conftest import CLIENT_ID, wait_until

    from clients.http import Timeouts
    sandbox.sb1_faults.latency = 30                 # the identity server hangs
    child = subprocess.Popen([sys.executable, "-c", f"""
import redis
from clients.http import Timeouts
from clients.sb1 import Credentials, TokenProvider
creds = Credentials.load({CLIENT_ID!r}, key_file={str(rsa_key[0])!r})
TokenProvider({sandbox.token_url!r}, creds, redis_client=redis.Redis.from_url({redis_server!r}),
              cache_key="msb1test:sb1-token", timeouts=Timeouts(1, 4)).token()
"""], cwd=ROOT)
    creds = Credentials.load(CLIENT_ID, key_file=str(rsa_key[0]))
    provider = TokenProvider(sandbox.token_url, creds, redis_client=r, cache_key="msb1test:sb1-token",
                             timeouts=Timeouts(1, 4))
    try:
        wait_until(lambda: r.exists(f"{provider.key}:lock"), 20, message="the child holding the lock")
        child.kill()                                # killed mid-fetch: the lock stays behind
        child.wait(10)
    finally:
        child.kill()
    assert r.exists(f"{provider.key}:lock")
    sandbox.sb1_faults.latency = 0
    started = time.monotonic()
    assert provider.token()
    waited = time.monotonic() - started
    assert waited < 1 + 4 + 5 + 1, f"waited {waited:.1f}s for a dead process's lock"


def test_bad_credentials_are_refused(sandbox, r):
    wrong = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from conftest import CLIENT_ID
    provider = TokenProvider(sandbox.token_url, Credentials(CLIENT_ID, private_key=wrong), redis_client=r,
                             cache_key="msb1test:sb1-token")
    with pytest.raises(AuthError) as err:
        provider.token()
    assert str(err.value) == "SpareBank 1 identity server POST /connect/token: HTTP 400: invalid_client"
    assert err.value.detail == "client_assertion refused: Signature verification failed"   # email only
    assert err.value.code == "credentials"


def test_worker_refuses_to_start_on_an_invalid_integrations_file(tmp_path, worker_env):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[integration]]\nid = "acme"\nbank = "atlantis"\n')
    env = dict(worker_env, MSB1_INTEGRATIONS_FILE=str(bad))
    out = subprocess.run([sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "threads"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "the worker cannot start: invalid integrations file" in out.stderr
    assert "integration 'acme', field 'bank': unknown bank 'atlantis'" in out.stderr


def test_the_platform_refusing_a_createguid_it_has_is_a_duplicate_create(sandbox, r, rsa_key):
    """The vendor's way of saying "this create happened already" is one typed error; any
    other 400 is a RecordInvalid naming the fields, without the platform's own words."""
    from conftest import CLIENT_ID, COMPANY_KEYS

    from errors import DuplicateCreate, RecordInvalid
    creds = Credentials.load(CLIENT_ID, key_file=str(rsa_key[0]))
    client = SB1Client(sandbox.sb1_url, COMPANY_KEYS["acme"],
                       TokenProvider(sandbox.token_url, creds, redis_client=r, cache_key="msb1test:sb1-token"))
    body = {"CustomerNumber": 100001, "Info": {"Name": "Fjord Bygg AS"}, "_createguid": "g-1"}
    client.create("customers", body)
    with pytest.raises(DuplicateCreate) as twin:
        client.create("customers", body)
    assert twin.value.fields == ["_createguid"]
    with pytest.raises(RecordInvalid) as bad:
        client.create("customers", {"CustomerNumber": 5, "Info": {"Name": "Fjord Bygg AS"}})
    assert type(bad.value) is RecordInvalid and bad.value.fields == ["CustomerNumber"]
    assert str(bad.value) == "SpareBank 1 Regnskap POST /api/biz/customers: HTTP 400 (fields: CustomerNumber)"
    assert "Kundenummer må være mellom" in bad.value.detail           # the platform's words: email only


def test_the_cached_token_is_encrypted_and_shared_by_processes_with_the_same_credentials(
        sandbox, r, rsa_key, redis_server):
    """Redis holds ciphertext only; a second process (same credentials, its own provider)
    decrypts it and asks the identity server for nothing."""
    from conftest import CLIENT_ID
    creds = Credentials.load(CLIENT_ID, key_file=str(rsa_key[0]))
    provider = TokenProvider(sandbox.token_url, creds, redis_client=r, cache_key="msb1test:sb1-token")
    token = provider.token()
    assert token in sandbox.sb1.tokens and sandbox.sb1.token_requests == 1
    dump = {key: r.dump(key) for key in r.keys("*")}
    assert dump and not [key for key, value in dump.items() if token.encode() in value]
    assert token not in r.get("msb1test:sb1-token")
    child = subprocess.run([sys.executable, "-c", f"""
import redis
from clients.sb1 import Credentials, TokenProvider
creds = Credentials.load({CLIENT_ID!r}, key_file={str(rsa_key[0])!r})
print(TokenProvider({sandbox.token_url!r}, creds, redis_client=redis.Redis.from_url({redis_server!r}),
                    cache_key="msb1test:sb1-token").token())
"""], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == token and sandbox.sb1.token_requests == 1


def test_a_cached_token_that_does_not_decrypt_counts_as_absent(sandbox, r, rsa_key):
    """Another key's token, a tampered one, or one an older version cached in clear: each is
    fetched anew (and overwritten), never used and never an error."""
    import json
    import time

    from conftest import CLIENT_ID
    creds = Credentials.load(CLIENT_ID, key_file=str(rsa_key[0]))
    provider = TokenProvider(sandbox.token_url, creds, redis_client=r, cache_key="msb1test:sb1-token")
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = TokenProvider(sandbox.token_url, Credentials(CLIENT_ID, private_key=other_key), redis_client=r,
                          cache_key="msb1test:sb1-token")
    sealed = other._seal("someone-elses-token", time.time() + 3600)
    in_clear = json.dumps({"access_token": "a-token-in-clear", "expires_at": time.time() + 3600})
    tampered = bytearray(provider._seal("tampered-token", time.time() + 3600))
    tampered[40] ^= 1
    for n, planted in enumerate((sealed, in_clear, bytes(tampered), b"garbage"), start=1):
        r.set("msb1test:sb1-token", planted)
        provider._local = None
        token = provider.token()
        assert token in sandbox.sb1.tokens, planted
        assert sandbox.sb1.token_requests == n
        assert provider._open(r.get("msb1test:sb1-token"))["access_token"] == token


def test_keys_derived_from_the_credentials_are_per_use_and_per_key(tmp_path, key_and_cert, rsa_key):
    """The same private key gives the same keys from a PEM and from a PKCS#12 file; another
    key, another client id or another use gives other keys."""
    key, cert = key_and_cert
    pem = tmp_path / "k.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    p12 = tmp_path / "k.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"client", key, cert, None, serialization.BestAvailableEncryption(b"pw")))
    from_pem = Credentials.load("c", key_file=str(pem))
    from_p12 = Credentials.load("c", p12_file=str(p12), p12_password="pw")
    assert from_pem.derive_key(b"a") == from_p12.derive_key(b"a")
    assert len(from_pem.derive_key(b"a")) == 32
    assert from_pem.derive_key(b"a") != from_pem.derive_key(b"b")
    assert from_pem.derive_key(b"a") != Credentials.load("d", key_file=str(pem)).derive_key(b"a")
    assert from_pem.derive_key(b"a") != Credentials.load("c", key_file=str(rsa_key[0])).derive_key(b"a")
    secret = Credentials.load("c", client_secret="s3cret")
    assert secret.derive_key(b"a") == Credentials.load("c", client_secret="s3cret").derive_key(b"a")
    assert secret.derive_key(b"a") != Credentials.load("c", client_secret="other").derive_key(b"a")
