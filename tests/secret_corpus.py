"""The secret corpus the redaction tests share, and the prefilter rule written out.

``CASES`` holds credentials as a backend logs them: in the message, a printf
argument, a field, a nested field, an int field, a list of header pairs, an
argv list, an exception's message, a traceback's source line, stdlib
``logging``.  Each names its family (the vendor or shape) and the substrings
that must never be stored.  ``CLEAN`` holds near misses that must be stored
byte for byte: words that contain a key word, SHAs, UUIDs, numbers that are
not card numbers.  ``PII`` holds personal data, redacted only with
``redact_pii=True``.

Every value is made here from a seeded generator, so a secret is distinctive
(it cannot turn up by chance in a timestamp or a page header) and the same
on every run.

``run(db_path, ...)`` logs the whole corpus through janus_utils, one record per
case, in a process of its own (see tests/test_secret_landing.py).
"""

from __future__ import annotations

import base64
import logging
import random
import string
import sys
from pathlib import Path
from typing import Any, NamedTuple

ALNUM = string.ascii_letters + string.digits
LOWER_ALNUM = string.ascii_lowercase + string.digits
HEX = "0123456789abcdef"
URLSAFE = ALNUM + "-_"
B64 = ALNUM + "+/"


def rand(seed: str, alphabet: str, n: int) -> str:
    """n characters of *alphabet*, the same for the same seed; always mixed letters and digits."""
    rng = random.Random(seed)
    while True:
        out = "".join(rng.choice(alphabet) for _ in range(n))
        letters = any(c.isalpha() for c in out) or not any(c.isalpha() for c in alphabet)
        digits = any(c.isdigit() for c in out) or not any(c.isdigit() for c in alphabet)
        upper = any(c.isupper() for c in out) or not any(c.isupper() for c in alphabet)
        if letters and digits and upper:
            return out


class Case(NamedTuple):
    id: str
    family: str
    form: str  # how it is logged: see log_case
    value: Any
    secrets: tuple[str, ...]  # none of these may be stored anywhere


class Clean(NamedTuple):
    id: str
    form: str  # "message", "field" or "int_field": stored exactly as logged
    value: Any


# -- the secrets, made once ----------------------------------------------------

STRIPE_LIVE = "sk_live_" + rand("stripe1", ALNUM, 32)
STRIPE_RESTRICTED = "rk_live_" + rand("stripe2", ALNUM, 40)
STRIPE_TEST = "sk_test_" + rand("stripe3", ALNUM, 24)
STRIPE_WEBHOOK = "whsec_" + rand("stripe4", ALNUM, 32)
OPENAI_LEGACY = "sk-" + rand("openai1", ALNUM, 20) + "T3BlbkFJ" + rand("openai2", ALNUM, 20)
OPENAI_PROJECT = "sk-proj-" + rand("openai3", URLSAFE, 74) + "T3BlbkFJ" + rand("openai4", URLSAFE, 58)
OPENAI_PLAIN = "sk-" + rand("openai5", ALNUM, 48)
ANTHROPIC = "sk-ant-api03-" + rand("anthropic1", URLSAFE, 93) + "AA"
GOOGLE = "AIza" + rand("google1", URLSAFE, 35)
SENDGRID = "SG." + rand("sendgrid1", URLSAFE, 22) + "." + rand("sendgrid2", URLSAFE, 43)
NPM = "npm_" + rand("npm1", ALNUM, 36)
HUGGINGFACE = "hf_" + rand("hf1", string.ascii_letters, 34)
HUGGINGFACE_ORG = "api_org_" + rand("hf2", string.ascii_letters, 34)
GITLAB_PAT = "glpat-" + rand("gitlab1", URLSAFE, 20)
GITLAB_DEPLOY = "gldt-" + rand("gitlab2", ALNUM, 20)
GITLAB_RUNNER = "glrt-" + rand("gitlab3", ALNUM, 20)
DIGITALOCEAN = "dop_v1_" + rand("do1", HEX, 64)
DIGITALOCEAN_OAUTH = "doo_v1_" + rand("do2", HEX, 64)
SHOPIFY = "shpat_" + rand("shopify1", HEX, 32)
SHOPIFY_SECRET = "shpss_" + rand("shopify2", HEX, 32)
PYPI = "pypi-AgEIcHlwaS5vcmc" + rand("pypi1", URLSAFE, 150)
MAILGUN = "key-" + rand("mailgun1", LOWER_ALNUM, 32)
MAILGUN_NEW = rand("mailgun2", HEX, 32) + "-" + rand("mailgun3", HEX, 8) + "-" + rand("mailgun4", HEX, 8)
SLACK_WEBHOOK_PATH = "T0" + rand("slack1", string.ascii_uppercase + string.digits, 9) + "/B0" + rand(
    "slack2", string.ascii_uppercase + string.digits, 9
) + "/" + rand("slack3", ALNUM, 24)
SLACK_WEBHOOK = "https://hooks.slack.com/services/" + SLACK_WEBHOOK_PATH
AWS_KEY_ID = "AKIA" + rand("aws1", string.ascii_uppercase + "234567", 16)
AWS_SECRET = rand("aws2", ALNUM + "/+", 40)
AWS_SECRET_2 = rand("aws3", ALNUM + "/+", 40)
AZURE_ACCOUNT_KEY = rand("azure1", B64, 86) + "=="
AZURE_SAS_SIG = rand("azure2", ALNUM, 30) + "%2B" + rand("azure3", ALNUM, 10) + "%3D"
ORACLE_PW = rand("oracle1", ALNUM, 12)
ORACLE_PW_2 = rand("oracle2", ALNUM, 14)
ORACLE_PW_3 = rand("oracle3", ALNUM, 10)
SESSION_ID = rand("cookie1", ALNUM, 32)
CSRF = rand("cookie2", ALNUM, 32)
JSESSIONID = rand("cookie3", string.ascii_uppercase + string.digits, 32)
PHPSESSID = rand("cookie4", LOWER_ALNUM, 26)
CONNECT_SID = "s%3A" + rand("cookie5", URLSAFE, 32) + "." + rand("cookie6", ALNUM, 43)
REMEMBER = rand("cookie7", ALNUM, 20)
BEARER = rand("bearer1", URLSAFE, 40)
BASIC_CREDS = base64.b64encode(b"deploy:" + rand("basic1", ALNUM, 16).encode()).decode()
HEADER_KEY = rand("header1", ALNUM, 32)
HEADER_COOKIE = rand("header2", ALNUM, 28)
ARGV_PW = rand("argv1", ALNUM, 14)
ARGV_TOKEN = rand("argv2", ALNUM, 30)
ARGV_PW_2 = rand("argv3", ALNUM, 12) + "!x"
DOCKER_AUTH = base64.b64encode(b"ci-bot:" + rand("docker1", ALNUM, 20).encode()).decode()
DIGEST_RESPONSE = rand("digest1", HEX, 32)
DIGEST_RESPONSE_2 = rand("digest2", HEX, 32)
PIN = "".join(random.Random("pin1").choice(string.digits) for _ in range(8))
OTP = "".join(random.Random("otp1").choice(string.digits) for _ in range(8))
PW = rand("pw1", ALNUM, 12)
PASS = rand("pass1", ALNUM, 12)
PASSCODE = rand("passcode1", ALNUM, 10)
AUTH = rand("auth1", ALNUM, 24)
CSRFTOKEN = rand("csrftoken1", ALNUM, 32)
PASSWORD = rand("password1", ALNUM, 14)
GITHUB = "ghp_" + rand("github1", ALNUM, 36)
SLACK_BOT = "xoxb-" + rand("slack4", string.digits, 11) + "-" + rand("slack5", string.digits, 12) + "-" + rand("slack6", ALNUM, 24)
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    + base64.urlsafe_b64encode(b'{"sub":"' + rand("jwt1", ALNUM, 12).encode() + b'"}').decode().rstrip("=")
    + "."
    + rand("jwt2", URLSAFE, 43)
)
PEM_BODY = rand("pem1", B64, 64)
PEM = f"-----BEGIN RSA PRIVATE KEY-----\nMIIEow{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
URL_PW = rand("url1", ALNUM, 16)

# Luhn-valid test card numbers (the networks' published test numbers).
VISA, MASTERCARD, AMEX, DISCOVER = 4111111111111111, 5555555555554444, 378282246310005, 6011111111111117
VISA_2, MASTERCARD_2 = 4012888888881881, 2223003122003222


def tail(secret: str, n: int = 16) -> str:
    """The last *n* characters: a secret redacted only in part still leaves this."""
    return secret[-n:]


def v(secret: str) -> tuple[str, ...]:
    """The needles for a token: the whole of it and its random tail."""
    return (secret, tail(secret)) if len(secret) > 20 else (secret,)


def _token_cases(family: str, secret: str, statement: str, *, context: str = "") -> list[Case]:
    """One vendor token in five places: message, field, nested field, exception, source line."""
    prefix = f"{context} " if context else ""
    return [
        Case(f"{family}-msg", family, "message", f"{prefix}using {secret} for the upload", v(secret)),
        Case(f"{family}-field", family, "field", f"{prefix}{secret}", v(secret)),
        Case(f"{family}-nested", family, "nested", f"{prefix}retry with {secret}", v(secret)),
        Case(f"{family}-exc", family, "exception", f"{prefix}rejected credential {secret} (401)", v(secret)),
        Case(f"{family}-source", family, "traceback", statement, v(secret)),
    ]


CASES: list[Case] = [
    # Stripe (gitleaks stripe-access-token; whsec_ webhook signing secrets)
    *_token_cases("stripe", STRIPE_LIVE, f'stripe.api_base, charge_key = "https://api", "{STRIPE_LIVE}"'),
    Case("stripe-restricted", "stripe", "message", f"restricted key {STRIPE_RESTRICTED} in use", v(STRIPE_RESTRICTED)),
    Case("stripe-test", "stripe", "argument", STRIPE_TEST, v(STRIPE_TEST)),
    Case("stripe-webhook", "stripe", "message", f"verifying with {STRIPE_WEBHOOK}", v(STRIPE_WEBHOOK)),
    Case("stripe-webhook-field", "stripe", "field", STRIPE_WEBHOOK, v(STRIPE_WEBHOOK)),
    # OpenAI (gitleaks openai-api-key) and Anthropic (anthropic-api-key)
    *_token_cases("openai", OPENAI_PROJECT, f'client = OpenAI(organization="org-1", base="{OPENAI_PROJECT}")'),
    Case("openai-legacy", "openai", "message", f"OPENAI {OPENAI_LEGACY} expired", v(OPENAI_LEGACY)),
    Case("openai-plain", "openai", "argument", OPENAI_PLAIN, v(OPENAI_PLAIN)),
    Case("openai-stdlib", "openai", "stdlib", f"legacy client got {OPENAI_PLAIN}", v(OPENAI_PLAIN)),
    *_token_cases("anthropic", ANTHROPIC, f'client = Anthropic(default_headers={{}}, key_ref="{ANTHROPIC}")'),
    # Google API keys (gcp-api-key), SendGrid, npm, Hugging Face, GitLab
    *_token_cases("google", GOOGLE, f'maps = Client(options="{GOOGLE}")'),
    *_token_cases("sendgrid", SENDGRID, f'mailer = SendGridAPIClient("{SENDGRID}")'),
    *_token_cases("npm", NPM, f'registry_line = "//registry.npmjs.org/:_authToken " + "{NPM}"'),
    *_token_cases("huggingface", HUGGINGFACE, f'hub = HfApi(endpoint="https://hf.co", t="{HUGGINGFACE}")'),
    Case("huggingface-org", "huggingface", "message", f"org token {HUGGINGFACE_ORG} used", v(HUGGINGFACE_ORG)),
    *_token_cases("gitlab", GITLAB_PAT, f'gl = Gitlab("https://gitlab.example.com", private="{GITLAB_PAT}")'),
    Case("gitlab-deploy", "gitlab", "message", f"deploy token {GITLAB_DEPLOY} rotated", v(GITLAB_DEPLOY)),
    Case("gitlab-runner", "gitlab", "field", GITLAB_RUNNER, v(GITLAB_RUNNER)),
    # DigitalOcean, Shopify, PyPI, Mailgun, Slack webhooks
    *_token_cases("digitalocean", DIGITALOCEAN, f'do = Manager(t="{DIGITALOCEAN}")'),
    Case("digitalocean-oauth", "digitalocean", "message", f"oauth {DIGITALOCEAN_OAUTH} ok", v(DIGITALOCEAN_OAUTH)),
    *_token_cases("shopify", SHOPIFY, f'shop = Session("shop.myshopify.com", "2024-01", "{SHOPIFY}")'),
    Case("shopify-secret", "shopify", "field", SHOPIFY_SECRET, v(SHOPIFY_SECRET)),
    *_token_cases("pypi", PYPI, f'upload(repository="pypi", u="__token__", p="{PYPI}")'),
    *_token_cases(
        "mailgun", MAILGUN, f'requests.post("https://api.mailgun.net/v3/x", auth=("api", "{MAILGUN}"))',
        context="mailgun",
    ),
    Case("mailgun-new", "mailgun", "message", f"Mailgun sending key {MAILGUN_NEW} loaded", v(MAILGUN_NEW)),
    *_token_cases("slack_webhook", SLACK_WEBHOOK, f'hook = WebhookClient("{SLACK_WEBHOOK}")'),
    # AWS secret access keys outside a sensitive key
    Case("aws-msg", "aws_secret", "message", f"aws creds {AWS_KEY_ID} {AWS_SECRET} loaded", v(AWS_SECRET)),
    Case("aws-colon", "aws_secret", "field", f"{AWS_KEY_ID}:{AWS_SECRET}", v(AWS_SECRET)),
    Case("aws-word", "aws_secret", "message", f"AWS region us-east-1 using {AWS_SECRET_2}", v(AWS_SECRET_2)),
    Case("aws-nested", "aws_secret", "nested", f"aws profile default: {AWS_SECRET_2}", v(AWS_SECRET_2)),
    Case("aws-exc", "aws_secret", "exception", f"AWS signature mismatch for {AWS_KEY_ID} / {AWS_SECRET}", v(AWS_SECRET)),
    Case(
        "aws-source", "aws_secret", "traceback",
        f's3 = boto3.client("s3", aws_region="x", creds=("{AWS_KEY_ID}", "{AWS_SECRET}"))', v(AWS_SECRET),
    ),
    # card numbers as int fields, and written with double spaces, tabs or dots
    Case("card-int-visa", "card", "int_field", VISA, (str(VISA),)),
    Case("card-int-mastercard", "card", "int_field", MASTERCARD, (str(MASTERCARD),)),
    Case("card-int-amex", "card", "int_field", AMEX, (str(AMEX),)),
    Case("card-int-discover", "card", "int_field", DISCOVER, (str(DISCOVER),)),
    Case("card-int-2series", "card", "int_field", MASTERCARD_2, (str(MASTERCARD_2),)),
    Case("card-int-nested", "card", "nested_int", VISA_2, (str(VISA_2),)),
    Case("card-double-space", "card", "message", "paid with 4012  8888  8888  1881 today", ("8888  8888", "4012  8888")),
    Case("card-tabs", "card", "message", "card\t5555\t5555\t5555\t4444\tdeclined", ("5555\t5555", "5555\t4444")),
    Case("card-dots", "card", "message", "card 4111.1111.1111.1111 on file", ("4111.1111", "1111.1111")),
    Case("card-dots-field", "card", "field", "6011.1111.1111.1117", ("6011.1111", "1111.1117")),
    Case("card-exc", "card", "exception", "charge declined for 3782 822463 10005", ("822463",)),
    # Azure Storage: AccountKey= in a connection string, sig= in a SAS URL
    Case(
        "azure-conn", "azure", "message",
        f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={AZURE_ACCOUNT_KEY};EndpointSuffix=core.windows.net",
        v(AZURE_ACCOUNT_KEY),
    ),
    Case(
        "azure-conn-field", "azure", "field",
        f"AccountName=acme;AccountKey={AZURE_ACCOUNT_KEY}", v(AZURE_ACCOUNT_KEY),
    ),
    Case(
        "azure-sas", "azure", "message",
        f"GET https://acme.blob.core.windows.net/c/b.txt?sv=2022-11-02&se=2030-01-01&sr=b&sp=r&sig={AZURE_SAS_SIG}",
        v(AZURE_SAS_SIG),
    ),
    Case("azure-sas-exc", "azure", "exception", f"403 for ?sp=r&sig={AZURE_SAS_SIG}", v(AZURE_SAS_SIG)),
    Case(
        "azure-source", "azure", "traceback",
        f'svc = BlobServiceClient.from_connection_string("AccountName=a;AccountKey={AZURE_ACCOUNT_KEY}")',
        v(AZURE_ACCOUNT_KEY),
    ),
    # Oracle user/password@database
    Case("oracle-sqlplus", "oracle", "message", f"running sqlplus scott/{ORACLE_PW}@orcl @report.sql", (ORACLE_PW,)),
    Case("oracle-jdbc", "oracle", "field", f"jdbc:oracle:thin:app/{ORACLE_PW_2}@//db.internal:1521/ORCLPDB1", (ORACLE_PW_2,)),
    Case("oracle-connect", "oracle", "message", f"CONNECT system/{ORACLE_PW_3}@XE failed", (ORACLE_PW_3,)),
    Case("oracle-host", "oracle", "nested", f"dsn_target=etl/{ORACLE_PW}@db.internal:1521/SALES", (ORACLE_PW,)),
    Case("oracle-source", "oracle", "traceback", f'conn = cx_Oracle.connect("hr/{ORACLE_PW_2}@localhost/XEPDB1")', (ORACLE_PW_2,)),
    # cookies: every one of them, and the session cookies of Java, PHP, Express
    Case("cookie-second", "cookie", "message", f"Cookie: theme=dark; sessionid={SESSION_ID}; csrftoken={CSRF}", (SESSION_ID, CSRF)),
    Case("cookie-jsession", "cookie", "message", f"Cookie: lang=en; JSESSIONID={JSESSIONID}", (JSESSIONID,)),
    Case("cookie-php", "cookie", "field", f"PHPSESSID={PHPSESSID}; path=/", (PHPSESSID,)),
    Case("cookie-express", "cookie", "message", f"set connect.sid={CONNECT_SID}", v(CONNECT_SID)),
    Case("cookie-unnamed", "cookie", "message", f"Cookie: a=1; remember_me={REMEMBER}", (REMEMBER,)),
    Case("cookie-header-field", "cookie", "dict_field", {"cookie": f"theme=dark; sessionid={SESSION_ID}"}, (SESSION_ID,)),
    Case("cookie-exc", "cookie", "exception", f"bad Cookie: x=1; JSESSIONID={JSESSIONID}", (JSESSIONID,)),
    # header lists of (name, value) tuples, as WSGI, ASGI and requests give them
    Case(
        "headers-tuples", "header_tuples", "headers",
        [("Accept", "application/json"), ("Authorization", f"Bearer {BEARER}"), ("X-Api-Key", HEADER_KEY)],
        (BEARER, HEADER_KEY),
    ),
    Case("headers-bytes", "header_tuples", "headers", [(b"cookie", f"sid={HEADER_COOKIE}".encode())], (HEADER_COOKIE,)),
    Case("headers-basic", "header_tuples", "headers", [("authorization", f"Basic {BASIC_CREDS}")], v(BASIC_CREDS)),
    Case("headers-text", "header_tuples", "message", f"request headers: [('X-Api-Key', '{HEADER_KEY}')]", (HEADER_KEY,)),
    Case("headers-lists", "header_tuples", "headers", [["x-auth-token", HEADER_KEY]], (HEADER_KEY,)),
    Case("headers-exc", "header_tuples", "exception", f"upstream said no to [('Authorization', 'Token {BEARER}')]", (BEARER,)),
    # --password VALUE in an argv list and on a command line
    Case("argv-list", "argv", "argv", ["mysqldump", "--password", ARGV_PW, "shop"], (ARGV_PW,)),
    Case("argv-token", "argv", "argv", ["deploy", "--token", ARGV_TOKEN, "--force"], (ARGV_TOKEN,)),
    Case("argv-text", "argv", "message", f"exec: pg_dump --password {ARGV_PW_2} --host db", (ARGV_PW_2,)),
    Case("argv-repr", "argv", "message", f"spawned ['app', '--db-password', '{ARGV_PW}']", (ARGV_PW,)),
    Case("argv-pin", "argv", "argv", ["unlock", "--pin", PIN], (PIN,)),
    Case("argv-exc", "argv", "exception", f"command failed: backup --passphrase {ARGV_PW_2}", (ARGV_PW_2,)),
    # Docker's config.json: "auth" is base64 user:password
    Case(
        "docker-text", "docker_auth", "message",
        f'docker config {{"auths": {{"registry.example.com": {{"auth": "{DOCKER_AUTH}"}}}}}}', v(DOCKER_AUTH),
    ),
    Case(
        "docker-field", "docker_auth", "dict_field",
        {"auths": {"registry.example.com": {"auth": DOCKER_AUTH}}}, v(DOCKER_AUTH),
    ),
    Case("docker-exc", "docker_auth", "exception", f'pull denied, "auth": "{DOCKER_AUTH}"', v(DOCKER_AUTH)),
    # HTTP Digest: response= is a hash of the password
    Case(
        "digest-header", "digest", "message",
        f'Authorization: Digest username="bob", realm="api", nonce="dcd98b", uri="/x", response="{DIGEST_RESPONSE}"',
        (DIGEST_RESPONSE,),
    ),
    Case(
        "digest-bare", "digest", "message",
        f'retrying Digest username="svc", realm="r", uri="/y", qop=auth, response="{DIGEST_RESPONSE_2}"',
        (DIGEST_RESPONSE_2,),
    ),
    Case("digest-field", "digest", "field", f'Digest username="bob", response="{DIGEST_RESPONSE}"', (DIGEST_RESPONSE,)),
    # key names: pin, otp, pw, pass, passcode, auth, csrftoken
    Case("key-pin", "key_names", "message", f"card unlock pin={PIN} accepted", (PIN,)),
    Case("key-pin-field", "key_names", "dict_field", {"pin": PIN}, (PIN,)),
    Case("key-user-pin", "key_names", "dict_field", {"userPin": int(PIN)}, (str(int(PIN)),)),
    Case("key-otp", "key_names", "message", f"2fa otp: {OTP}", (OTP,)),
    Case("key-otp-field", "key_names", "dict_field", {"otp": OTP}, (OTP,)),
    Case("key-pw", "key_names", "message", f"login pw={PW} rejected", (PW,)),
    Case("key-pw-field", "key_names", "dict_field", {"pw": PW}, (PW,)),
    Case("key-pass", "key_names", "message", f"ftp user=bob pass={PASS}", (PASS,)),
    Case("key-pass-field", "key_names", "dict_field", {"pass": PASS}, (PASS,)),
    Case("key-passcode", "key_names", "message", f'{{"passcode": "{PASSCODE}"}}', (PASSCODE,)),
    Case("key-auth", "key_names", "message", f"proxy auth={AUTH}", (AUTH,)),
    Case("key-auth-field", "key_names", "dict_field", {"basic_auth": f"bob:{AUTH}"}, (AUTH,)),
    Case("key-csrftoken", "key_names", "message", f"csrftoken={CSRFTOKEN}", (CSRFTOKEN,)),
    Case("key-csrftoken-field", "key_names", "dict_field", {"csrftoken": CSRFTOKEN}, (CSRFTOKEN,)),
    Case("key-pin-exc", "key_names", "exception", f"invalid pin: {PIN}", (PIN,)),
    Case("key-pass-source", "key_names", "traceback", f'ftp.login("bob", pass_ := "{PASS}")', (PASS,)),
    # the families redaction always knew, in the places it now also looks
    Case("classic-password", "classic", "message", f"login failed password={PASSWORD}", (PASSWORD,)),
    Case("classic-password-source", "classic", "traceback", f'db.connect(host="db", password="{PASSWORD}")', (PASSWORD,)),
    Case("classic-bearer", "classic", "exception", f"401 for Authorization: Bearer {BEARER}", (BEARER,)),
    Case("classic-jwt", "classic", "field", JWT, v(JWT)),
    Case("classic-jwt-source", "classic", "traceback", f'verify(token_text="{JWT}")', v(JWT)),
    Case("classic-github", "classic", "argument", GITHUB, v(GITHUB)),
    Case("classic-slack", "classic", "nested", f"bot {SLACK_BOT} posted", v(SLACK_BOT)),
    Case("classic-aws-key-id", "classic", "message", f"using {AWS_KEY_ID} for s3", (AWS_KEY_ID,)),
    Case("classic-pem", "classic", "message", f"loaded\n{PEM}", (PEM_BODY[:24], PEM_BODY[-24:])),
    Case("classic-url", "classic", "stdlib", f"connecting to postgres://app:{URL_PW}@db:5432/x", (URL_PW,)),
    Case("classic-url-source", "classic", "traceback", f'engine = create_engine("mysql://root:{URL_PW}@db/shop")', (URL_PW,)),
    Case("classic-bound", "classic", "bound", {"api_key": HEADER_KEY}, (HEADER_KEY,)),
    Case("classic-extra", "classic", "stdlib_extra", {"password": PASSWORD}, (PASSWORD,)),
]

CLEAN: list[Clean] = [
    Clean("words-ping", "message", "ping from health checker: pong in 3 ms, mapping shipping keeping"),
    Clean("words-passed", "message", "all 12 tests passed; bypass mode off; compass heading 270"),
    Clean("words-author", "message", "author alice authenticated via oauth; authorized for read"),
    Clean("words-inside", "message", "inside the side panel; consider residual risk"),
    Clean("words-task", "message", "task-runner picked job; disk-usage 71%; risk-score low; desk-app v2"),
    Clean("words-msg", "message", "msg.id=42 pkg.version=1.4.2 svg.width=12"),
    Clean("words-key-value", "message", "cache miss for key-less lookup in key-value store"),
    Clean("words-sk-learn", "message", "model sk-learn-compatible-wrapper loaded"),
    Clean("words-pipeline", "message", "pipeline stopping; skipping 2 steps; sleeping 5s; dropping 0"),
    Clean("status-auth", "message", "auth: ok, retries: 2"),
    Clean("status-pass", "message", "lint pass: true, typecheck pass: true"),
    Clean("status-auth-field", "dict_field", {"auth": "ok", "pass": True}),
    Clean("git-sha", "message", "deployed commit 9fceb02d0ae598e95dc970b74767f19372d61af8 to prod"),
    Clean("git-sha-aws", "message", "aws-cli built from 3a5e1f0c9d8b7a6f5e4d3c2b1a09f8e7d6c5b4a3"),
    Clean("uuid-request", "field", "550e8400-e29b-41d4-a716-446655440000"),
    Clean("uuid-request-msg", "message", "request 3f2b6c1e-8a4d-4c7b-9e21-5d0f7a9b1c33 done in 12 ms"),
    Clean("short-numbers", "message", "order 8842 of 12 shipped in 3 boxes, 1024 bytes"),
    Clean("epoch-ms", "message", "event at 1710498153123 ms"),
    Clean("epoch-ms-int", "int_field", 1710498153123),
    Clean("snowflake-int", "int_field", 1234567890123456789),
    Clean("luhn-invalid-int", "int_field", 4111111111111112),
    Clean("order-int", "int_field", 7392018374652910),
    Clean("small-int", "int_field", 42),
    Clean("negative-int", "int_field", -4242424242424242),
    Clean("luhn-invalid-text", "message", "order #4111111111111112 shipped"),
    Clean("version", "message", "upgraded openssl 3.0.13 to 3.0.14 (build 2024.03.15)"),
    Clean("actions-ref", "message", "uses: actions/checkout@v4 and actions/setup-python@v5"),
    Clean("image-digest", "message", "pulled library/nginx@sha256:0d17b565c37bcbd895e9d92315a05c1c3c9a29f762b011a10c54a66cd53c9b31"),
    Clean("npm-scope", "message", "installed @types/node@20.11.5"),
    Clean("url-plain", "message", "see https://example.com/docs?page=2&sort=name"),
    Clean("cookie-domain", "message", "cookie_domain=.example.com session_timeout=30m"),
    Clean("bearer-prose", "message", "the bearer of bad news; Basic setup complete"),
    Clean("digest-prose", "message", "sha256 digest of the upload verified"),
    Clean("sig-word", "message", "process exited on signal 15 (sig: SIGTERM)"),
    Clean("email-default", "message", "password reset mail sent to alice@example.com"),
    Clean("iban-default", "message", "refund to IBAN DE89 3704 0044 0532 0130 00"),
    Clean("ssn-shaped-default", "message", "ticket 078-05-1120 reopened"),
    Clean("aws-region", "message", "aws region eu-west-1, bucket logs-archive"),
    Clean("mailgun-domain", "message", "mailgun domain mg.example.com verified"),
    Clean("slack-channel", "message", "posted to slack channel #ops via hooks"),
    Clean("sas-prose", "message", "the SAS token expires tomorrow"),
    Clean("unicode", "message", "journée terminée — 日本語 — emoji 🎉"),
    Clean("path-at", "message", "GET /users/42 from 10.0.0.1 by bob@example.com"),
    Clean("hex-digest-field", "field", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    Clean("tokens-prose", "message", "token_count=512 max_tokens=4096 tokenizer: bert"),
]

PII: list[Case] = [
    Case("pii-email", "pii_email", "message", "password reset mail sent to erin.walsh@example.org", ("erin.walsh@example.org",)),
    Case("pii-email-field", "pii_email", "dict_field", {"email": "frank.ng@example.net"}, ("frank.ng@example.net",)),
    Case("pii-iban", "pii_iban", "message", "refund to IBAN GB82 WEST 1234 5698 7654 32 queued", ("5698 7654",)),
    Case("pii-iban-compact", "pii_iban", "field", "DE89370400440532013000", ("DE89370400440532013000",)),
    Case("pii-ssn", "pii_ssn", "message", "applicant 536-90-4399 verified", ("536-90-4399",)),
]


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = int(char) * (2 if index % 2 else 1)
        total += digit - 9 if digit > 9 else digit
    return total % 10 == 0


# -- the prefilter rule, written out -------------------------------------------


KEY_END = b" \t=:\"'\\_-."  # what may follow a key word: key=, key:, "key", --key value, key_


def token_matches(token: str, low: bytes, *, key: bool = False) -> bool:
    """Rule (a) for one token, written out.

    "^tok" counts where no ASCII letter or digit comes right before it; "tok$"
    where one of KEY_END comes right after it, or (for a key, *key*) where the
    text ends.
    """
    starts = token.startswith("^") and len(token) > 1
    ends = token.endswith("$") and len(token) > 1 + starts
    text = token[1 if starts else 0 : len(token) - 1 if ends else len(token)].encode()
    start = low.find(text)
    while start != -1:
        before = low[start - 1 : start]
        after = low[start + len(text) : start + len(text) + 1]
        left = not starts or not (before.isascii() and before.isalnum())
        right = not ends or (after in KEY_END if after else key)
        if left and right:
            return True
        start = low.find(text, start + 1)
    return False


def reference_prefilter(text: str, tokens: tuple[str, ...]) -> bool:
    """The prefilter rule written out over UTF-8 bytes, as the C port does it."""
    data = text.encode("utf-8", errors="surrogatepass")
    low = bytes(b + 32 if 65 <= b <= 90 else b for b in data)
    if any(token_matches(token, low) for token in tokens):
        return True
    return card_or_url_credentials(data)


def card_or_url_credentials(data: bytes) -> bool:
    """Rules (b) and (c): 13 or more digits in a run of digits and separators, or "/" then
    "@" before the next white space."""
    digits = 0
    for byte in data:
        if 48 <= byte <= 57:
            digits += 1
            if digits >= 13:
                return True
        elif byte not in b" \t-.":
            digits = 0
    start = data.find(b"/")
    while start != -1:
        for byte in data[start + 1 :]:
            if byte in b" \t\n\r\x0b\x0c":
                break
            if byte == 64:  # '@'
                return True
        start = data.find(b"/", start + 1)
    return False


# -- logging the corpus ---------------------------------------------------------


def _exception(message: str) -> BaseException:
    try:
        raise RuntimeError(message)
    except RuntimeError as err:
        return err


def _source_exception(statement: str, directory: Path, name: str) -> BaseException:
    """An exception raised on a source line that holds *statement*, as a traceback shows it."""
    module = directory / f"{name}.py"
    module.write_text(
        "def boom():\n"
        "    f = lambda *args, **kwargs: None\n"
        "    Client = OpenAI = Anthropic = SendGridAPIClient = HfApi = Gitlab = Manager = f\n"
        "    Session = WebhookClient = create_engine = verify = upload = f\n"
        "    stripe = boto3 = cx_Oracle = db = ftp = requests = BlobServiceClient = "
        "type('Any', (), {'__getattr__': lambda self, name: f})()\n"
        f"    {statement}; raise RuntimeError('configuration rejected')\n",
        encoding="utf-8",
    )
    namespace: dict[str, Any] = {}
    exec(compile(module.read_text(encoding="utf-8"), str(module), "exec"), namespace)
    try:
        namespace["boom"]()
    except RuntimeError as err:
        return err
    raise AssertionError("the source line did not raise")


def log_case(case: Case | Clean, log: Any, std: logging.Logger, workdir: Path) -> None:
    """Log *case* the way its form says: exactly one record."""
    form, value = case.form, case.value
    if form == "message":
        log.info(value)
    elif form == "argument":
        log.info("configured with %s", value)
    elif form == "field":
        log.info("event", detail=value)
    elif form == "int_field":
        log.info("charge", amount_ref=value)
    elif form == "nested":
        log.info("payload", body={"items": [{"note": value}], "n": 1})
    elif form == "nested_int":
        log.info("payload", body={"items": [{"ref": value}]})
    elif form == "headers":
        log.info("request", headers=value)
    elif form == "argv":
        log.info("started", argv=value)
    elif form == "dict_field":
        log.info("config", **value)
    elif form == "bound":
        log.bind(**value).info("bound")
    elif form == "exception":
        log.error("failed", exc_info=_exception(value))
    elif form == "traceback":
        log.error("failed", exc_info=_source_exception(value, workdir, f"src_{case.id.replace('-', '_')}"))
    elif form == "stdlib":
        std.warning(value)
    elif form == "stdlib_extra":
        std.warning("legacy", extra=value)
    else:
        raise ValueError(f"unknown form {form!r}")


def run(db_path: str, workdir: str, *, pii: bool = False) -> dict[str, Any]:
    """Log every case (CASES and CLEAN, or PII) into *db_path*; called in a process of its own.

    The console (INFO and above, so every record) goes to stderr.  The flusher
    is held idle while the cases are logged, so ``<db>.ring-snapshot`` holds
    the ring file with every record as it was pushed (the flusher zeroes what
    it has committed).  After the flush ``<db>.snapshot`` holds the database
    and its WAL byte for byte, taken while the WAL still holds the commits.
    """
    import janus_utils as ju

    directory = Path(workdir)
    options: dict[str, Any] = {"redact_pii": True} if pii else {}
    # commit_interval: the flusher commits when flush() asks (or a quarter of the ring fills).
    ju.configure(db_path, console_level="INFO", capture_stdlib=True, commit_interval=3600, **options)
    log = ju.get_logger("corpus")
    std = logging.getLogger("legacy.std")
    cases: list[Case | Clean] = list(PII) if pii else [*CASES, *CLEAN]
    try:
        for case in cases:
            log_case(case, log, std, directory)
        Path(f"{db_path}.ring-snapshot").write_bytes(Path(f"{db_path}-ring").read_bytes())
        if not ju.flush(timeout=60):
            raise RuntimeError("flush timed out")
        snapshot = b"".join(
            Path(f"{db_path}{suffix}").read_bytes()
            for suffix in ("", "-wal")
            if Path(f"{db_path}{suffix}").exists()
        )
        Path(f"{db_path}.snapshot").write_bytes(snapshot)
        native = bool(ju.stats()["speedups"])
    finally:
        ju.shutdown()
    return {"cases": len(cases), "native": native}


if __name__ == "__main__":
    import json

    result = run(sys.argv[1], sys.argv[2], pii=len(sys.argv) > 3 and sys.argv[3] == "pii")
    print(json.dumps(result))
