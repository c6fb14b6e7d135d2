"""Hostile input on every route of the URL map (issue 11, item 7).

Driven by `app.url_map.iter_rules()`: every route (customer, admin, API, Stripe webhook, auth, static)
is first probed with a valid session (customer or admin as its blueprint needs), a CSRF token, valid
ids in its path and a seed body; the names of the query arguments, form fields and JSON fields the
view reads are recorded while it runs (so a route added later is covered without editing this test).
Then every recorded field and every path argument receives each value of the corpus, in turn.

For every answer: no 5xx, under 1 s, markup never echoed unescaped, and when the answer is a refusal
(4xx) no table gained or lost a row. A route the probe cannot exercise (an unknown path argument,
or the probe itself refused with 401/403/404/405) fails the test until it is listed in CANNOT_EXERCISE
with a reason.
"""

import json
import secrets
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

import pytest
from flask import request as flask_request
from sqlalchemy import select, text
from werkzeug.datastructures import ImmutableMultiDict

from app.models.customer import UserSession
from app.models.usage import PlanPrice
from tests.conftest import PLATFORM_TOKEN, csrf_token_from, login
from tests.stripe_support import sign

pytestmark = pytest.mark.integration

MARKUP = "<script>alert('hostile')</script>"
CORPUS = [
    "1e999990", "1E+999999", "-0.01", "99999999999999999999", "92233720368547758.07", "25,50", "NaN",
    "a\x00b", "9" * 10_000, "😀💸 ☃", MARKUP, "=cmd|' /C calc'!A0", "9999-12-31", "9999-12", " ", "",
]
PATH_CORPUS = ["0", "-1", "2147483648", "99999999999999999999", "1e999990", "\x00", "A" * 10_000, MARKUP]
# JSON fields also get the wrong types.
JSON_EXTRA = [None, True, 1e308, -(2**70), [], {}, {"id": {"nested": ["deep"]}}, [[[[[[[[[[[]]]]]]]]]]]]

# Routes the probe cannot exercise, with the reason. Empty means every route is covered.
CANNOT_EXERCISE: dict[tuple[str, str], str] = {}

# Refusals that write by design: {endpoint: (tables, reason)}. Every other table must stay unchanged.
WRITES_ON_REFUSAL: dict[str, tuple[set[str], str]] = {
    "stripe.webhook": ({"stripe_events"}, "a malformed Stripe event is answered 400 and recorded as ignored, "
                                          "so that it is not applied later (issue 11 item 4)"),
}

# Seeds by field name: plausible values so that the hostile value in *another* field gets past the
# form's other checks. Unknown names get "1". (Only seeds: the hostile values go into every field.)
SEEDS = {
    "amount": "10.00", "value": "10.00", "hourly_price": "0.5", "reason": "hostile input test",
    "count": "1", "max_redemptions": "1", "days": "7", "note": "note", "reference": "REF-1",
    "kind": "vm", "size": "hostile", "code": "NOT-A-CODE", "password": "correct-horse-battery",
    "confirm": "correct-horse-battery", "name": "Hostile", "q": "customer", "state": "open", "plan": "vm-small",
    "event_id": "evt-hostile", "deployment_id": "dep-hostile", "type": "created", "public_ip": "y",
    "effective_at": "", "valid_until": "", "page": "1", "polls": "1", "session_id": "cs_test_unknown",
}

# ------------------------------------------------------------------ recording ---
RECORDED: dict[str, set[str]] = defaultdict(set)


class RecordingMultiDict(ImmutableMultiDict):
    """request.args / request.form that remember which names the view looked up."""

    kind = ""

    def _see(self, key):
        RECORDED[self.kind].add(key)

    def __contains__(self, key):
        self._see(key)
        return super().__contains__(key)

    def __getitem__(self, key):
        self._see(key)
        return super().__getitem__(key)

    def get(self, key, default=None, type=None):  # noqa: A002 - werkzeug's signature
        self._see(key)
        return super().get(key, default, type)

    def getlist(self, key, type=None):  # noqa: A002
        self._see(key)
        return super().getlist(key, type)


class RecordingArgs(RecordingMultiDict):
    kind = "args"


class RecordingForm(RecordingMultiDict):
    kind = "form"


class RecordingJson(dict):
    def get(self, key, default=None):
        RECORDED["json"].add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        RECORDED["json"].add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        RECORDED["json"].add(key)
        return super().__contains__(key)


def _install_recorder():
    req = flask_request._get_current_object()
    req.__dict__["args"] = RecordingArgs(req.args)
    if req.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        req.__dict__["form"] = RecordingForm(req.form)
    if req.is_json:
        try:
            body = req.get_json(silent=True)
        except RecursionError:  # the view's own parser refuses it; nothing to record
            return
        if isinstance(body, dict):
            wrapped = RecordingJson(body)
            req._cached_json = (wrapped, wrapped)


# ---------------------------------------------------------------------- world ---
@pytest.fixture
def world(app, session, factory, quiet_stripe):
    from app import accounts
    from app.billing import vouchers
    from app.billing.credit_notes import CreditLineInput, issue_credit_note
    from tests.integration.usage_helpers import add_card, make_plan
    from tests.money_support import make_invoice

    customer = factory.customer(email="victim@example.com")
    factory.admin()
    session.commit()
    invoice = make_invoice(session, customer.id, 1234)
    credited = make_invoice(session, customer.id, 999)
    note = issue_credit_note(session, credited.id, [CreditLineInput(None, 100, None, "hostile world")],
                             reason="hostile world", request_key="hostile-world")
    card = add_card(session, customer)
    plan = make_plan(session)
    batch = vouchers.create_voucher_batch(session, actor_id=None, count=1, value_cents=500, max_redemptions=1,
                                          expires_at=None, note=None, request_key="hostile-world")
    _, token = accounts.create_reset_token(session, customer.email)
    price_version = session.scalar(select(PlanPrice.id).where(PlanPrice.plan_id == plan.id))
    accounts.start_session(session, customer.id, user_agent="another browser", ip_address="127.0.0.2")
    other_browser = session.scalar(select(UserSession.id).where(UserSession.user_id == customer.id)
                                   .order_by(UserSession.id.desc()))
    session.commit()
    return {
        "customer": customer,
        "path": {
            "invoice_id": invoice.id, "card_id": card.id, "customer_id": customer.id, "plan_id": plan.id,
            "voucher_id": batch.codes[0][0].id, "token": token, "raw_customer_id": customer.id,
            "filename": "paydesk.css", "credit_note_id": note.id, "version_id": price_version,
            "session_id": other_browser,
        },
    }


def _audience(rule) -> str:
    if rule.endpoint == "stripe.webhook":
        return "webhook"
    blueprint = rule.endpoint.rpartition(".")[0]
    return {"admin": "admin", "api": "api"}.get(blueprint, "customer")


class Sessions:
    """One login per role at the start (login is rate-limited, and the corpus exhausts that limit);
    every route then gets a fresh client carrying a copy of that role's session cookie."""

    def __init__(self, app, customer_email):
        self.app = app
        self.cookies = {}
        self.logins = {
            "customer": (customer_email, "correct-horse-battery", "/balance"),
            "admin": ("root@example.com", "admin-password-1", "/admin/"),
        }
        for role in self.logins:
            self.refresh(role)

    def refresh(self, audience):
        """Log in again (a route such as "sign out everywhere" may have ended the role's session)."""
        email, password, page = self.logins[audience]
        client = self.app.test_client()
        login(client, email, password)
        token = csrf_token_from(client.get(page).get_data(as_text=True))
        self.cookies[audience] = ({c.key: c.value for c in client._cookies.values()}, token)

    def client(self, audience):
        client = self.app.test_client()
        if audience not in self.cookies:
            return client, None
        cookies, token = self.cookies[audience]
        for key, value in cookies.items():
            client.set_cookie(key, value)
        return client, token


def _row_counts(session) -> Counter:
    tables = [r[0] for r in session.execute(text(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"))]
    counts = session.execute(text("SELECT " + ", ".join(f'(SELECT count(*) FROM "{t}")' for t in tables))).one()
    session.commit()
    return Counter(dict(zip(tables, counts, strict=True)))


def _stripe_event(event_type: str, obj: dict) -> dict:
    return {"id": "evt_" + secrets.token_hex(8), "object": "event", "type": event_type,
            "created": int(time.time()), "livemode": False, "data": {"object": obj}}


def _seed_stripe_object(customer_stripe_id="cus_unknown"):
    return {"id": "obj_hostile", "customer": customer_stripe_id, "mode": "setup", "setup_intent": "seti_unknown",
            "payment_intent": "pi_unknown", "amount": 500, "charge": "ch_unknown", "status": "succeeded",
            "metadata": {"paydesk_customer_id": "1", "kind": "topup"}}


class _Refused:
    status_code = 500
    headers: dict = {}


def session_rollback(session):
    session.rollback()


class Prober:
    def __init__(self, app, session, world):
        self.app, self.session, self.world = app, session, world
        self.requests = Counter()
        self.failures: list[str] = []
        self.slowest = (0.0, "")
        self.rotation = 0
        self.baseline = _row_counts(session)

    # one request, with every assertion
    def send(self, client, rule, method, url, *, args=None, form=None, json_body=None, raw=None, what=""):
        before = self.baseline
        headers = {}
        kwargs = {}
        if json_body is not None or raw is not None:
            payload = raw if raw is not None else json.dumps(json_body).encode()
            kwargs.update(data=payload, content_type="application/json")
            if _audience(rule) == "webhook":
                headers["Stripe-Signature"] = sign(payload)
        elif form is not None:
            kwargs["data"] = form
        if _audience(rule) == "api":
            headers["Authorization"] = f"Bearer {PLATFORM_TOKEN}"
        if args:
            url = url + "?" + urlencode(args)
        started = time.perf_counter()
        try:
            response = client.open(url, method=method, headers=headers, **kwargs)
        except Exception as exc:  # noqa: BLE001 - TESTING propagates what would be a 500
            self.requests[rule.endpoint] += 1
            self.failures.append(f"5xx ({type(exc).__name__}: {str(exc)[:150]}): {method} {rule.rule} {what}")
            session_rollback(self.session)
            self.baseline = _row_counts(self.session)
            return _Refused()
        elapsed = time.perf_counter() - started
        body = response.get_data()
        response.close()
        label = f"{method} {rule.rule} {what} -> {response.status_code}"
        self.requests[rule.endpoint] += 1
        if elapsed > self.slowest[0]:
            self.slowest = (elapsed, label)
        if response.status_code >= 500:
            self.failures.append(f"5xx: {label}")
        if elapsed >= 1.0:
            self.failures.append(f"slow ({elapsed:.2f}s): {label}")
        if response.mimetype == "text/html" and MARKUP.encode() in body:
            self.failures.append(f"markup echoed unescaped: {label}")
        after = self.baseline = _row_counts(self.session)
        # a refusal writes nothing; 402 is not a refusal of the input but a payment that failed at
        # Stripe, whose attempt is recorded before Stripe is called, by design
        if 400 <= response.status_code < 500 and response.status_code != 402:
            allowed = WRITES_ON_REFUSAL.get(rule.endpoint, (set(), ""))[0]
            changed = {t: (before[t], after[t]) for t in after if after[t] != before[t] and t not in allowed}
            if changed:
                self.failures.append(f"refused but wrote {changed}: {label}")
        return response

    def url_for_rule(self, rule, path_values) -> str:
        parts = []
        for is_dynamic, piece in rule._trace:
            if is_dynamic:
                parts.append(quote(str(path_values[piece]), safe=""))
            else:
                parts.append(piece)
        return "".join(parts).partition("|")[2]


@pytest.fixture
def recorder(app):
    app.before_request_funcs.setdefault(None, []).append(_install_recorder)
    yield
    app.before_request_funcs[None].remove(_install_recorder)


def _body_kind(rule) -> str:
    if _audience(rule) in ("api", "webhook"):
        return "json"
    return "form"


def test_every_route_survives_hostile_input(app, session, world, recorder):
    prober = Prober(app, session, world)
    sessions = Sessions(app, world["customer"].email)
    not_exercised = []
    # the auth blueprint last: logging out or resetting a password may end the sessions in use
    routes = sorted(
        ((rule, method) for rule in app.url_map.iter_rules() for method in rule.methods - {"HEAD", "OPTIONS"}),
        key=lambda rm: (rm[0].endpoint.startswith("auth."), rm[0].rule, rm[1]),
    )
    started = time.perf_counter()
    for rule, method in routes:
        key = (rule.endpoint, method)
        if key in CANNOT_EXERCISE:
            continue
        unknown_args = [a for a in rule.arguments if a not in world["path"]]
        if unknown_args:
            not_exercised.append(f"{method} {rule.rule}: no valid value for {unknown_args}")
            continue
        client, csrf = sessions.client(_audience(rule))
        url = prober.url_for_rule(rule, world["path"])
        seeds = _discover(prober, client, csrf, rule, method, url)
        if seeds is None and _audience(rule) in sessions.logins:
            sessions.refresh(_audience(rule))  # the session may have been ended by an earlier route
            client, csrf = sessions.client(_audience(rule))
            seeds = _discover(prober, client, csrf, rule, method, url)
        if seeds is None:
            not_exercised.append(f"{method} {rule.rule}: the probe was refused")
            continue
        _attack(prober, client, csrf, rule, method, seeds)
    duration = time.perf_counter() - started
    covered = {endpoint for endpoint in prober.requests}
    print(f"\nhostile input: {sum(prober.requests.values())} requests to {len(covered)} endpoints "
          f"({len(routes)} route/method pairs) in {duration:.1f}s; slowest {prober.slowest[0]:.3f}s {prober.slowest[1]}")
    for endpoint, count in sorted(prober.requests.items()):
        print(f"  {count:5d}  {endpoint}")
    assert not prober.failures, f"{len(prober.failures)} failures:\n" + "\n".join(f[:300] for f in prober.failures[:80])
    assert not not_exercised, "routes the hostile test cannot exercise (list them in CANNOT_EXERCISE with a reason):\n" + "\n".join(not_exercised)


def _discover(prober, client, csrf, rule, method, url):
    """Probe the route, learn which names it reads, refill them with seeds until nothing new is read.
    Returns {"args": {...}, "form": {...}, "json": {...}} or None when the probe is refused."""
    seeds = {"args": {}, "form": {}, "json": {}}
    kind = _body_kind(rule)
    if _audience(rule) == "webhook":
        seeds["json"] = _seed_stripe_object()
    elif kind == "json" and method != "GET":
        seeds["json"] = _documented_body(prober, rule, method)
    for _round in range(4):
        RECORDED.clear()
        response = _send_seeded(prober, client, csrf, rule, method, url, seeds, what="probe")
        if response.status_code in (401, 403, 404, 405) or (
            response.status_code in (302, 303) and "/login?next=" in response.headers.get("Location", "")
        ):
            return None
        learned = False
        for name in RECORDED["args"] - {"csrf_token"}:
            if name not in seeds["args"]:
                seeds["args"][name] = SEEDS.get(name, "1")
                learned = True
        for name in RECORDED["form"] - {"csrf_token"}:
            if name not in seeds["form"] and kind == "form":
                seeds["form"][name] = SEEDS.get(name, "1")
                learned = True
        for name in RECORDED["json"]:
            if name not in seeds["json"] and kind == "json":
                seeds["json"][name] = _json_seed(name, prober.world)
                learned = True
        if not learned:
            break
    return seeds


def _documented_body(prober, rule, method) -> dict:
    """The API's request bodies are parsed by the view itself, so their fields are learnt from the
    OpenAPI document the app serves: a seed value for every documented property of the route's body."""
    import re

    document = prober.app.test_client().get("/api/v1/openapi.json").get_json()
    shape = re.sub(r"<[^>]+>", "{}", rule.rule.removeprefix("/api/v1"))
    for path, operations in document.get("paths", {}).items():
        if re.sub(r"\{[^}]+\}", "{}", path) != shape or method.lower() not in operations:
            continue
        body = operations[method.lower()].get("requestBody", {}).get("content", {}).get("application/json", {})
        schema = body.get("schema", {})
        while "$ref" in schema:
            schema = document
            for part in body["schema"]["$ref"].lstrip("#/").split("/"):
                schema = schema[part]
        seed = {}
        for name, spec in schema.get("properties", {}).items():
            if "enum" in spec:
                seed[name] = spec["enum"][0]
            elif spec.get("type") == "integer":
                seed[name] = _json_seed(name, prober.world) if name.endswith("customer_id") else 1
            else:
                seed[name] = _json_seed(name, prober.world)
        return seed
    return {}


def _json_seed(name, world):
    if name == "customer_id":
        return world["customer"].id
    if name == "occurred_at":
        return datetime.now(UTC).isoformat()
    return SEEDS.get(name, "1")


def _send_seeded(prober, client, csrf, rule, method, url, seeds, *, what, args=None, form=None, json_body=None):
    args = dict(seeds["args"]) if args is None else args
    if _audience(rule) == "webhook":
        from app.billing.stripe_events import HANDLERS

        # a signed event with the (hostile) object inside: every handled type for the probe, one
        # type per hostile value otherwise (rotating, so every handler meets the corpus)
        obj = dict(seeds["json"]) if json_body is None else json_body
        types = list(HANDLERS) if what == "probe" else [list(HANDLERS)[prober.rotation % len(HANDLERS)]]
        prober.rotation += 1
        response = None
        for event_type in types:
            response = prober.send(client, rule, method, url, json_body=_stripe_event(event_type, obj),
                                   what=f"{what} [{event_type}]")
        return response
    if _body_kind(rule) == "json" and method != "GET":
        body = dict(seeds["json"]) if json_body is None else json_body
        return prober.send(client, rule, method, url, args=args, json_body=body, what=what)
    if method == "GET":
        return prober.send(client, rule, method, url, args=args, what=what)
    body = dict(seeds["form"]) if form is None else form
    if csrf:
        body.setdefault("csrf_token", csrf)
    return prober.send(client, rule, method, url, args=args, form=body, what=what)


def _attack(prober, client, csrf, rule, method, seeds):
    url_values = dict(prober.world["path"])
    for name in rule.arguments:
        for value in PATH_CORPUS:
            url = prober.url_for_rule(rule, {**url_values, name: value})
            _send_seeded(prober, client, csrf, rule, method, url, seeds, what=f"path {name}={value[:20]!r}")
    url = prober.url_for_rule(rule, url_values)
    for name in seeds["args"]:
        for value in CORPUS:
            _send_seeded(prober, client, csrf, rule, method, url, seeds, what=f"arg {name}={value[:20]!r}",
                         args={**seeds["args"], name: value})
    if method != "GET" and _body_kind(rule) == "form":
        for name in seeds["form"]:
            for value in CORPUS:
                _send_seeded(prober, client, csrf, rule, method, url, seeds, what=f"form {name}={value[:20]!r}",
                             form={**seeds["form"], name: value, "csrf_token": csrf})
    if _body_kind(rule) == "json" and method != "GET":
        for name in seeds["json"]:
            for value in CORPUS + JSON_EXTRA:
                _send_seeded(prober, client, csrf, rule, method, url, seeds, what=f"json {name}={str(value)[:20]!r}",
                             json_body={**seeds["json"], name: value})
        for raw in (b"", b"{", b"[]", b"null", b"\x00", b"9" * 10_000, b"[" * 5_000 + b"]" * 5_000):
            prober.send(client, rule, method, url, raw=raw, what=f"raw body {raw[:10]!r}")
        if _audience(rule) == "webhook":
            for name in ("id", "type", "created", "data"):
                for value in JSON_EXTRA + ["", "A" * 10_000, MARKUP]:
                    event = {**_stripe_event("checkout.session.completed", seeds["json"]), name: value}
                    prober.send(client, rule, method, url, json_body=event, what=f"event {name}={str(value)[:20]!r}")
