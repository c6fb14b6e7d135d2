"""Front service for the dev/test Stripe emulator.

It starts localstripe (GPL-3, so only ever as a separate process) on a free loopback port and sits in
front of it. Everything it does not handle itself is passed through untouched. It adds:

* ``Idempotency-Key`` handling for ``POST /v1/...`` like real Stripe (replay, idempotency_error),
* Checkout Sessions (API + a tiny hosted page under ``/checkout/{id}``) and the
  ``checkout.session.completed`` / ``checkout.session.expired`` events, signed webhook delivery,
* ``GET /v1/events`` merging localstripe's events with its own, newest first,
* fault injection (``/_emulator/faults``) and a health endpoint (``/_emulator/health``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import hmac
import html
import itertools
import json
import logging
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web

log = logging.getLogger("stripe_emulator")

API_VERSION = "2026-10-28.endive"
HOP_BY_HOP = {
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding",
    "proxy-connection", "upgrade", "te", "trailer",
}
NOT_SAVED_STATUSES = {400, 401, 403, 404, 409, 429}
EVENT_HORIZON = 100_000  # localstripe list limit used to fetch "all" events


# ---------------------------------------------------------------------------------------------------------
# helpers


def stripe_error(status: int, type_: str, message: str, **extra: Any) -> web.Response:
    body = {"error": {"type": type_, "message": message, **extra}}
    return web.json_response(body, status=status)


def unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Decode Stripe-style form keys (``a[b][0][c]``, ``events[]``) into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head] + (re.findall(r"\[([^\[\]]*)\]", "[" + rest) if rest else [])
        node: Any = root
        ok = True
        for part in parts[:-1]:
            if part == "":
                part = str(len(node))
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                ok = False
                break
        if not ok:
            continue
        last = parts[-1]
        if last == "":
            last = str(len(node))
        node[last] = value
    return _listify(root)


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _listify(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


def flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Inverse of :func:`unflatten` (lists become ``key[0]``)."""
    out: list[tuple[str, str]] = []
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for k, v in items:
        key = f"{prefix}[{k}]" if prefix else str(k)
        if isinstance(v, dict | list):
            out.extend(flatten(v, key))
        elif v is None:
            continue
        elif isinstance(v, bool):
            out.append((key, "true" if v else "false"))
        else:
            out.append((key, str(v)))
    return out


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, dict):
        return [str(v) for v in value.values()]
    return [str(value)]


def api_key_of(request: web.Request) -> str:
    """Scope for idempotency keys: the api key from the Authorization header (Bearer or Basic)."""
    header = request.headers.get("Authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() == "basic":
        import base64

        with contextlib.suppress(Exception):
            token = base64.b64decode(token).decode().split(":")[0]
    return token.strip()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the emulator


def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


# ---------------------------------------------------------------------------------------------------------
# state


@dataclass
class StoredResponse:
    fingerprint: tuple
    status: int
    body: bytes
    content_type: str | None


@dataclass
class Fault:
    path_prefix: str
    method: str
    mode: str
    count: int
    delay: float

    def matches(self, request: web.Request) -> bool:
        return (self.count > 0 and request.path.startswith(self.path_prefix)
                and self.method in ("*", request.method.upper()))


@dataclass
class Webhook:
    id: str
    url: str
    secret: str
    events: list[str] | None


@dataclass
class CheckoutSession:
    data: dict[str, Any]
    authorization: str
    line_items: list[dict[str, Any]] = field(default_factory=list)
    payment_intent_data: dict[str, Any] = field(default_factory=dict)
    setup_intent_data: dict[str, Any] = field(default_factory=dict)
    pending: dict[str, Any] | None = None  # 3-D Secure in progress: {"kind", "id", "client_secret", "pm"}
    seq: int = 0

    @property
    def id(self) -> str:
        return self.data["id"]


class Emulator:
    def __init__(self, localstripe_url: str, public_url: str) -> None:
        self.ls_url = localstripe_url.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self.http: aiohttp.ClientSession | None = None
        self.idem: dict[tuple[str, str], StoredResponse] = {}
        self.idem_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.faults: list[Fault] = []
        self.webhooks: dict[str, Webhook] = {}
        self.sessions: dict[str, CheckoutSession] = {}
        self.events: list[dict[str, Any]] = []
        self.seq = itertools.count(1)
        self.background: set[asyncio.Task] = set()
        self.deliveries: list[dict[str, Any]] = []  # log of own webhook deliveries (for debugging)

    # -- localstripe access ---------------------------------------------------------------------------------

    async def ls(self, method: str, path: str, authorization: str,
                 params: list[tuple[str, str]] | None = None) -> tuple[int, Any]:
        assert self.http is not None
        headers = {"Authorization": authorization}
        url = self.ls_url + path
        if method == "GET":
            if params:
                url += "?" + urlencode(params)
            data = None
        else:
            data = urlencode(params or [])
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        async with self.http.request(method, url, data=data, headers=headers) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text) if text.strip() else None
            except ValueError:
                return resp.status, {"error": {"type": "api_error", "message": text}}

    async def forward(self, request: web.Request) -> web.Response:
        assert self.http is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        url = self.ls_url + request.raw_path
        async with self.http.request(request.method, url, data=body or None, headers=headers,
                                     allow_redirects=False) as resp:
            payload = await resp.read()
            out = web.Response(status=resp.status, body=payload)
            ct = resp.headers.get("Content-Type")
            if ct:
                out.headers["Content-Type"] = ct
            for h in ("Request-Id", "Stripe-Version", "Location"):
                if h in resp.headers:
                    out.headers[h] = resp.headers[h]
            return out

    # -- events and webhooks --------------------------------------------------------------------------------

    def create_event(self, type_: str, obj: dict[str, Any]) -> dict[str, Any]:
        event = {
            "id": "evt_" + secrets.token_hex(12),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": json.loads(json.dumps(obj))},
            "livemode": False,
            "pending_webhooks": 0,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
            "_seq": next(self.seq),
        }
        self.events.append(event)
        targets = [w for w in self.webhooks.values()
                   if w.events is None or type_ in w.events or "*" in w.events]
        public = {k: v for k, v in event.items() if not k.startswith("_")}
        public["pending_webhooks"] = len(targets)
        event["pending_webhooks"] = len(targets)
        for hook in targets:
            task = asyncio.ensure_future(self.deliver(hook, public))
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        return event

    async def deliver(self, hook: Webhook, event: dict[str, Any]) -> None:
        assert self.http is not None
        payload = json.dumps(event, indent=2, sort_keys=True).encode()
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "Stripe-Signature": sign_payload(payload, hook.secret),
                   "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks) paydesk-emulator"}
        record = {"event": event["id"], "type": event["type"], "webhook": hook.id, "url": hook.url}
        try:
            async with self.http.post(hook.url, data=payload, headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=30)) as resp:
                await resp.read()
                record["status"] = resp.status
                if not 200 <= resp.status < 300:
                    log.warning("webhook %s for %s to %s answered %s", hook.id, event["type"], hook.url,
                                resp.status)
        except Exception as exc:  # noqa: BLE001 - delivery failures must never break anything
            record["error"] = repr(exc)
            log.warning("webhook %s for %s to %s failed: %r", hook.id, event["type"], hook.url, exc)
        self.deliveries.append(record)

    async def reset(self, request: web.Request) -> web.Response:
        resp = await self.forward(request)
        self.idem.clear()
        self.faults.clear()
        self.sessions.clear()
        self.events.clear()
        self.deliveries.clear()
        # localstripe's DELETE /_config/data keeps webhook registrations: neutralise the ones we know.
        for hook_id in list(self.webhooks):
            await self.ls("POST", f"/_config/webhooks/{hook_id}", "",
                          [("url", self.public_url + "/_emulator/void"), ("secret", "void"),
                           ("events[]", "emulator.disabled")])
        self.webhooks.clear()
        return resp

    async def register_webhook(self, request: web.Request) -> web.Response:
        resp = await self.forward(request)
        if resp.status == 200:
            form = unflatten(parse_qsl((await request.read()).decode(), keep_blank_values=True))
            events = form.get("events")
            hook_id = request.match_info["id"]
            self.webhooks[hook_id] = Webhook(hook_id, form["url"], form["secret"],
                                             _as_list(events) if events is not None else None)
        return resp


# ---------------------------------------------------------------------------------------------------------
# middlewares: faults, then idempotency


def _emu(request: web.Request) -> Emulator:
    return request.app["emulator"]


@web.middleware
async def fault_middleware(request: web.Request, handler):
    emu = _emu(request)
    if request.path.startswith(("/_emulator/", "/_config/")):
        return await handler(request)
    fault = next((f for f in emu.faults if f.matches(request)), None)
    if fault is None:
        return await handler(request)
    fault.count -= 1
    emu.faults = [f for f in emu.faults if f.count > 0]
    log.info("fault %s on %s %s", fault.mode, request.method, request.path)
    if fault.mode == "timeout":
        await asyncio.sleep(fault.delay)
    if fault.mode == "error_after_forward":
        await handler(request)  # really executes (and is stored under the idempotency key)
    resp = stripe_error(500, "api_error", f"Injected fault ({fault.mode}) by the Paydesk Stripe emulator.")
    resp.headers["X-Emulator-Fault"] = fault.mode
    return resp


@web.middleware
async def idempotency_middleware(request: web.Request, handler):
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key or not request.path.startswith("/v1/"):
        return await handler(request)
    emu = _emu(request)
    body = await request.read()
    ctype = request.headers.get("Content-Type", "")
    if "json" in ctype:
        params: Any = body
    else:
        params = tuple(sorted(parse_qsl(body.decode(errors="replace"), keep_blank_values=True)))
    fingerprint = (request.method, request.path, tuple(sorted(request.query.items())), params)
    scope = (api_key_of(request), key)
    lock = emu.idem_locks.setdefault(scope, asyncio.Lock())
    async with lock:
        stored = emu.idem.get(scope)
        if stored is not None:
            if stored.fingerprint != fingerprint:
                return stripe_error(
                    400, "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters they were "
                    f"first used with. Try using a key other than '{key}' if you meant to execute a "
                    "different request.")
            resp = web.Response(status=stored.status, body=stored.body)
            if stored.content_type:
                resp.headers["Content-Type"] = stored.content_type
            resp.headers["Idempotent-Replayed"] = "true"
            resp.headers["Idempotency-Key"] = key
            return resp
        resp = await handler(request)
        # Like Stripe: nothing is saved when the request failed validation (the endpoint never ran).
        if (isinstance(resp, web.Response) and isinstance(resp.body, bytes)
                and resp.status not in NOT_SAVED_STATUSES):
            emu.idem[scope] = StoredResponse(fingerprint, resp.status, resp.body,
                                             resp.headers.get("Content-Type"))
        resp.headers["Idempotency-Key"] = key
        return resp


# ---------------------------------------------------------------------------------------------------------
# emulator endpoints


async def health(request: web.Request) -> web.Response:
    emu = _emu(request)
    try:
        status, _ = await emu.ls("GET", "/v1/events", "Bearer sk_test_emulator_health", [("limit", "1")])
    except Exception as exc:  # noqa: BLE001
        return web.json_response({"status": "down", "error": repr(exc)}, status=503)
    ok = status == 200
    return web.json_response({"status": "ok" if ok else "down", "localstripe": emu.ls_url,
                              "public_url": emu.public_url}, status=200 if ok else 503)


async def set_fault(request: web.Request) -> web.Response:
    emu = _emu(request)
    try:
        data = await request.json()
        mode = data.get("mode", "error")
        if mode not in ("error", "timeout", "error_after_forward"):
            raise ValueError(f"unknown mode {mode!r}")
        fault = Fault(path_prefix=str(data["path_prefix"]), method=str(data.get("method", "POST")).upper(),
                      mode=mode, count=int(data.get("count", 1)), delay=float(data.get("delay", 30)))
    except (ValueError, KeyError, TypeError) as exc:
        return stripe_error(400, "invalid_request_error", f"Bad fault: {exc}")
    emu.faults.append(fault)
    return web.json_response({"faults": [vars(f) for f in emu.faults]})


async def list_faults(request: web.Request) -> web.Response:
    return web.json_response({"faults": [vars(f) for f in _emu(request).faults]})


async def clear_faults(request: web.Request) -> web.Response:
    _emu(request).faults.clear()
    return web.json_response({"faults": []})


async def list_deliveries(request: web.Request) -> web.Response:
    return web.json_response({"deliveries": _emu(request).deliveries})


async def void(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def config_data(request: web.Request) -> web.Response:
    return await _emu(request).reset(request)


async def config_webhook(request: web.Request) -> web.Response:
    return await _emu(request).register_webhook(request)


# ---------------------------------------------------------------------------------------------------------
# /v1/events (merged)


async def list_events(request: web.Request) -> web.Response:
    emu = _emu(request)
    query = unflatten(list(request.query.items()))
    try:
        limit = int(query.get("limit", 10))
        assert 1 <= limit <= 100
    except (ValueError, AssertionError):
        return stripe_error(400, "invalid_request_error", "Invalid integer: limit must be between 1 and 100.",
                            param="limit")
    type_ = query.get("type")
    types = _as_list(query.get("types")) or None
    created = query.get("created")
    params: list[tuple[str, str]] = [("limit", str(EVENT_HORIZON))]
    if isinstance(type_, str) and "*" not in type_:
        params.append(("type", type_))
    status, ls_body = await emu.ls("GET", "/v1/events", request.headers.get("Authorization", ""), params)
    if status != 200:
        return web.json_response(ls_body, status=status)
    ls_events = ls_body.get("data", [])
    merged: list[tuple[int, int, dict]] = []
    for i, ev in enumerate(ls_events):  # localstripe lists oldest first
        merged.append((ev.get("created", 0), i * 2, ev))
    base = len(ls_events) * 2
    for ev in emu.events:
        merged.append((ev["created"], base + ev["_seq"] * 2 + 1,
                       {k: v for k, v in ev.items() if not k.startswith("_")}))
    merged.sort(key=lambda t: (t[0], t[1]), reverse=True)
    items = [ev for _, _, ev in merged]

    def type_ok(t: str) -> bool:
        pats = types or ([type_] if isinstance(type_, str) else None)
        if not pats:
            return True
        return any(re.fullmatch(re.escape(p).replace(r"\*", ".*"), t) for p in pats)

    def created_ok(c: int) -> bool:
        if created is None:
            return True
        if not isinstance(created, dict):
            return c == int(created)
        ops = {"gt": c.__gt__, "gte": c.__ge__, "lt": c.__lt__, "lte": c.__le__}
        return all(ops[k](int(v)) for k, v in created.items() if k in ops)

    items = [ev for ev in items if type_ok(ev.get("type", "")) and created_ok(ev.get("created", 0))]
    after, before = query.get("starting_after"), query.get("ending_before")
    ids = [ev["id"] for ev in items]
    if after:
        if after not in ids:
            return stripe_error(404, "invalid_request_error", f"No such event: '{after}'",
                                code="resource_missing", param="starting_after")
        window = items[ids.index(after) + 1:]
        page, has_more = window[:limit], len(window) > limit
    elif before:
        if before not in ids:
            return stripe_error(404, "invalid_request_error", f"No such event: '{before}'",
                                code="resource_missing", param="ending_before")
        window = items[:ids.index(before)]
        page, has_more = window[-limit:], len(window) > limit
    else:
        page, has_more = items[:limit], len(items) > limit
    return web.json_response({"object": "list", "url": "/v1/events", "has_more": has_more, "data": page})


async def retrieve_event(request: web.Request) -> web.Response:
    emu = _emu(request)
    event_id = request.match_info["id"]
    for ev in emu.events:
        if ev["id"] == event_id:
            return web.json_response({k: v for k, v in ev.items() if not k.startswith("_")})
    return await emu.forward(request)


# ---------------------------------------------------------------------------------------------------------
# Checkout Sessions API


def _missing_session(session_id: str) -> web.Response:
    return stripe_error(404, "invalid_request_error", f"No such checkout.session: '{session_id}'",
                        code="resource_missing", param="session")


async def _post_params(request: web.Request) -> dict[str, Any]:
    body = await request.read()
    pairs = parse_qsl(body.decode(errors="replace"), keep_blank_values=True)
    pairs += list(request.query.items())
    return unflatten(pairs)


async def _expand(emu: Emulator, sess: CheckoutSession, expand: Any) -> dict[str, Any] | web.Response:
    obj = json.loads(json.dumps(sess.data))
    paths = _as_list(expand)
    groups: dict[str, list[str]] = {}
    for path in paths:
        head, _, rest = path.partition(".")
        groups.setdefault(head, [])
        if rest:
            groups[head].append(rest)
    resources = {"setup_intent": "/v1/setup_intents/", "payment_intent": "/v1/payment_intents/",
                 "customer": "/v1/customers/"}
    for head, rests in groups.items():
        if head not in resources:
            if head in ("line_items",):
                obj["line_items"] = {"object": "list", "has_more": False,
                                     "url": f"/v1/checkout/sessions/{sess.id}/line_items",
                                     "data": _line_item_objects(sess)}
                continue
            return stripe_error(400, "invalid_request_error",
                                f"This property cannot be expanded ({head}).", param="expand")
        ref = obj.get(head)
        if not ref:
            continue
        params = [(f"expand[{i}]", r) for i, r in enumerate(rests)]
        status, body = await emu.ls("GET", resources[head] + ref, sess.authorization, params)
        if status == 200:
            obj[head] = body
    return obj


def _line_item_objects(sess: CheckoutSession) -> list[dict[str, Any]]:
    out = []
    for i, item in enumerate(sess.line_items):
        pd = item.get("price_data") or {}
        qty = int(item.get("quantity", 1))
        unit = int(pd.get("unit_amount", 0))
        out.append({"id": f"li_{sess.id[8:]}_{i}", "object": "item", "quantity": qty,
                    "amount_total": unit * qty, "amount_subtotal": unit * qty,
                    "currency": pd.get("currency", sess.data.get("currency")),
                    "description": (pd.get("product_data") or {}).get("name"),
                    "price": {"object": "price", "unit_amount": unit, "currency": pd.get("currency"),
                              "product_data": pd.get("product_data")}})
    return out


async def create_session(request: web.Request) -> web.Response:
    emu = _emu(request)
    p = await _post_params(request)
    auth = request.headers.get("Authorization", "")
    mode = p.get("mode")
    if mode not in ("setup", "payment"):
        return stripe_error(400, "invalid_request_error",
                            "mode must be 'setup' or 'payment' (subscription is not emulated).", param="mode")
    customer = p.get("customer")
    if not customer:
        return stripe_error(400, "invalid_request_error",
                            "The emulator requires `customer` for Checkout Sessions.", param="customer")
    status, cust = await emu.ls("GET", f"/v1/customers/{customer}", auth)
    if status == 401:
        return web.json_response(cust, status=401)
    if status != 200:
        return stripe_error(400, "invalid_request_error", f"No such customer: '{customer}'",
                            code="resource_missing", param="customer")
    success_url = p.get("success_url")
    if not success_url:
        return stripe_error(400, "invalid_request_error", "Missing required param: success_url.",
                            param="success_url")
    line_items = p.get("line_items") or []
    if isinstance(line_items, dict):
        line_items = list(line_items.values())
    currency = p.get("currency")
    amount_total: int | None = None
    if mode == "payment":
        if not line_items:
            return stripe_error(400, "invalid_request_error", "line_items is required in payment mode.",
                                param="line_items")
        amount_total = 0
        for i, item in enumerate(line_items):
            pd = item.get("price_data") if isinstance(item, dict) else None
            if not isinstance(pd, dict) or "unit_amount" not in pd:
                return stripe_error(400, "invalid_request_error",
                                    "The emulator only supports line_items[][price_data].",
                                    param=f"line_items[{i}][price_data]")
            try:
                amount_total += int(pd["unit_amount"]) * int(item.get("quantity", 1))
            except ValueError:
                return stripe_error(400, "invalid_request_error", "Invalid integer.",
                                    param=f"line_items[{i}][price_data][unit_amount]")
            currency = currency or pd.get("currency")
        if amount_total <= 0:
            return stripe_error(400, "invalid_request_error", "amount_total must be positive.")
        if not currency:
            return stripe_error(400, "invalid_request_error", "Missing currency.", param="currency")
    session_id = "cs_test_" + secrets.token_urlsafe(42).replace("-", "a").replace("_", "b")[:58]
    now = int(time.time())
    pmt = _as_list(p.get("payment_method_types")) or ["card"]
    data = {
        "id": session_id,
        "object": "checkout.session",
        "amount_subtotal": amount_total,
        "amount_total": amount_total,
        "cancel_url": p.get("cancel_url"),
        "client_reference_id": p.get("client_reference_id"),
        "created": now,
        "currency": currency.lower() if isinstance(currency, str) else None,
        "customer": customer,
        "customer_email": None,
        "expires_at": now + 24 * 3600,
        "livemode": False,
        "metadata": p.get("metadata") or {},
        "mode": mode,
        "payment_intent": None,
        "payment_method_types": pmt,
        "payment_status": "unpaid" if mode == "payment" else "no_payment_required",
        "setup_intent": None,
        "status": "open",
        "success_url": success_url,
        "url": f"{emu.public_url}/checkout/{session_id}",
    }
    sess = CheckoutSession(data=data, authorization=auth, line_items=line_items,
                           payment_intent_data=p.get("payment_intent_data") or {},
                           setup_intent_data=p.get("setup_intent_data") or {}, seq=next(emu.seq))
    emu.sessions[session_id] = sess
    result = await _expand(emu, sess, p.get("expand"))
    return result if isinstance(result, web.Response) else web.json_response(result)


async def retrieve_session(request: web.Request) -> web.Response:
    emu = _emu(request)
    sess = emu.sessions.get(request.match_info["id"])
    if sess is None:
        return _missing_session(request.match_info["id"])
    query = unflatten(list(request.query.items()))
    result = await _expand(emu, sess, query.get("expand"))
    return result if isinstance(result, web.Response) else web.json_response(result)


async def session_line_items(request: web.Request) -> web.Response:
    sess = _emu(request).sessions.get(request.match_info["id"])
    if sess is None:
        return _missing_session(request.match_info["id"])
    return web.json_response({"object": "list", "has_more": False, "data": _line_item_objects(sess),
                              "url": f"/v1/checkout/sessions/{sess.id}/line_items"})


async def list_sessions(request: web.Request) -> web.Response:
    emu = _emu(request)
    q = unflatten(list(request.query.items()))
    limit = int(q.get("limit", 10))
    items = sorted(emu.sessions.values(), key=lambda s: s.seq, reverse=True)
    for f in ("customer", "payment_intent", "setup_intent", "status"):
        if q.get(f):
            items = [s for s in items if s.data.get(f) == q[f]]
    ids = [s.id for s in items]
    if q.get("starting_after") in ids:
        items = items[ids.index(q["starting_after"]) + 1:]
    elif q.get("ending_before") in ids:
        items = items[:ids.index(q["ending_before"])][-limit:]
    return web.json_response({"object": "list", "url": "/v1/checkout/sessions",
                              "has_more": len(items) > limit, "data": [s.data for s in items[:limit]]})


async def expire_session(request: web.Request) -> web.Response:
    emu = _emu(request)
    sess = emu.sessions.get(request.match_info["id"])
    if sess is None:
        return _missing_session(request.match_info["id"])
    if sess.data["status"] != "open":
        return stripe_error(400, "invalid_request_error",
                            f"Only Checkout Sessions with a status in [\"open\"] can be expired. This "
                            f"Checkout Session has a status of \"{sess.data['status']}\".")
    sess.data["status"] = "expired"
    sess.pending = None
    emu.create_event("checkout.session.expired", sess.data)
    p = await _post_params(request)
    result = await _expand(emu, sess, p.get("expand"))
    return result if isinstance(result, web.Response) else web.json_response(result)


# ---------------------------------------------------------------------------------------------------------
# hosted Checkout page

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:28rem;margin:3rem auto}}label{{display:block;margin:.6rem 0}}
input{{font-size:1rem;padding:.3rem;width:100%}}#error{{color:#b00}}button{{font-size:1rem;margin:.6rem 0}}</style>
</head><body><h1>{title}</h1>
<p class="emulator-note">Paydesk Stripe emulator &mdash; test mode</p>
{body}
</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(text=PAGE.format(title=html.escape(title), body=body), status=status,
                        content_type="text/html")


def _money(amount: int | None, currency: str | None) -> str:
    return f"{(amount or 0) / 100:.2f} {(currency or '').upper()}"


def _form_page(sess: CheckoutSession, error: str | None = None, status: int = 200,
               values: dict[str, str] | None = None) -> web.Response:
    d = sess.data
    values = values or {}
    pay = d["mode"] == "payment"
    parts = []
    if pay:
        parts.append(f'<p>Amount due: <strong id="amount">{html.escape(_money(d["amount_total"], d["currency"]))}'
                     "</strong></p>")
        for item in _line_item_objects(sess):
            parts.append(f'<p class="line-item">{html.escape(str(item["description"] or ""))} &times; '
                         f'{item["quantity"]}</p>')
    else:
        parts.append("<p>Save a card for future payments.</p>")
    if error:
        parts.append(f'<p id="error" role="alert">{html.escape(error)}</p>')
    parts.append(f"""<form method="post" action="/checkout/{html.escape(d['id'])}">
<label for="cardnumber">Card number
<input id="cardnumber" name="cardnumber" inputmode="numeric" autocomplete="cc-number"
 value="{html.escape(values.get('cardnumber', ''))}" placeholder="4242 4242 4242 4242" required></label>
<label for="exp">Expiry (MM/YY)
<input id="exp" name="exp" autocomplete="cc-exp" value="{html.escape(values.get('exp', ''))}"
 placeholder="MM/YY" required></label>
<label for="cvc">CVC
<input id="cvc" name="cvc" inputmode="numeric" autocomplete="cc-csc" placeholder="123" required></label>
<button type="submit" id="submit">{'Pay ' + html.escape(_money(d['amount_total'], d['currency'])) if pay
                                   else 'Save card'}</button>
</form>""")
    if d.get("cancel_url"):
        parts.append(f'<p><a id="cancel" href="{html.escape(d["cancel_url"])}">Cancel</a></p>')
    return _page("Pay" if pay else "Save card", "\n".join(parts), status)


def _auth_page(sess: CheckoutSession) -> web.Response:
    body = f"""<p>Your bank asks you to authenticate this {'payment' if sess.data['mode'] == 'payment'
                                                         else 'card'} (3-D Secure test).</p>
<form method="post" action="/checkout/{html.escape(sess.id)}/authenticate">
<button type="submit" name="result" value="complete" id="authenticate-complete">Complete authentication</button>
<button type="submit" name="result" value="fail" id="authenticate-fail">Fail authentication</button>
</form>"""
    return _page("Authenticate", body)


def _closed_page(sess: CheckoutSession) -> web.Response:
    status = sess.data["status"]
    return _page("Checkout", f'<p id="closed">This Checkout Session is {html.escape(status)}.</p>',
                 410 if status == "expired" else 409)


async def hosted_page(request: web.Request) -> web.Response:
    sess = _emu(request).sessions.get(request.match_info["id"])
    if sess is None:
        return _page("Not found", "<p>No such Checkout Session.</p>", 404)
    if sess.data["status"] != "open":
        return _closed_page(sess)
    if sess.pending:
        return _auth_page(sess)
    return _form_page(sess)


DECLINED = "Your card was declined."
AUTH_FAILED = ("We are unable to authenticate your payment method. Please choose a different payment "
               "method and try again.")


def _err_message(body: Any, default: str) -> str:
    with contextlib.suppress(Exception):
        msg = body["error"]["message"]
        if msg and msg not in ("Bad request",):
            return msg
    return default


async def hosted_submit(request: web.Request) -> web.Response:
    emu = _emu(request)
    sess = emu.sessions.get(request.match_info["id"])
    if sess is None:
        return _page("Not found", "<p>No such Checkout Session.</p>", 404)
    if sess.data["status"] != "open":
        return _closed_page(sess)
    form = await request.post()
    number = re.sub(r"[\s-]", "", str(form.get("cardnumber", "")))
    exp = str(form.get("exp", "")).replace(" ", "")
    cvc = str(form.get("cvc", "")).strip()
    values = {"cardnumber": str(form.get("cardnumber", "")), "exp": str(form.get("exp", ""))}
    m = re.fullmatch(r"(\d{1,2})/(\d{2}|\d{4})", exp)
    if not m or not 1 <= int(m.group(1)) <= 12:
        return _form_page(sess, "Your card's expiration date is incomplete or invalid.", 400, values)
    month, year = int(m.group(1)), int(m.group(2))
    year = year + 2000 if year < 100 else year
    auth = sess.authorization
    status, pm = await emu.ls("POST", "/v1/payment_methods", auth, [
        ("type", "card"), ("card[number]", number), ("card[exp_month]", str(month)),
        ("card[exp_year]", str(year)), ("card[cvc]", cvc)])
    if status != 200:
        code = (pm or {}).get("error", {}).get("code")
        msg = ("Your card's expiration year is invalid." if code == "invalid_expiry_year"
               else "Your card number, expiry or CVC is invalid.")
        return _form_page(sess, msg, 400, values)
    pm_id = pm["id"]
    d = sess.data
    if d["mode"] == "setup":
        sid = sess.setup_intent_data
        params = [("customer", d["customer"]), ("usage", str(sid.get("usage") or "off_session"))]
        params += [(f"payment_method_types[{i}]", t) for i, t in enumerate(d["payment_method_types"])]
        params += flatten({"metadata": sid.get("metadata") or {}})
        status, si = await emu.ls("POST", "/v1/setup_intents", auth, params)
        if status != 200:
            return _form_page(sess, _err_message(si, "Something went wrong."), 502, values)
        d["setup_intent"] = si["id"]
        status, si = await emu.ls("POST", f"/v1/setup_intents/{si['id']}/confirm", auth,
                                  [("payment_method", pm_id)])
        if status == 402:
            return _form_page(sess, DECLINED, 402, values)
        if status != 200:
            return _form_page(sess, _err_message(si, "Something went wrong."), 502, values)
        if si["status"] == "requires_action":
            sess.pending = {"kind": "setup_intent", "id": si["id"], "pm": pm_id}
            return _auth_page(sess)
        return await _finish_setup(emu, sess, pm_id, values)
    # payment mode: localstripe only declines some cards when charging (…0341) and others only when
    # attaching (…0002): probe with attach and detach again so that both kinds decline here.
    pid = sess.payment_intent_data
    status, body = await emu.ls("POST", f"/v1/payment_methods/{pm_id}/attach", auth,
                                [("customer", d["customer"])])
    if status == 402:
        return _form_page(sess, DECLINED, 402, values)
    keep_attached = bool(pid.get("setup_future_usage"))
    if status == 200 and not keep_attached:
        await emu.ls("POST", f"/v1/payment_methods/{pm_id}/detach", auth, [])
    params = [("amount", str(d["amount_total"])), ("currency", d["currency"]), ("customer", d["customer"]),
              ("payment_method", pm_id), ("confirm", "true")]
    params += [(f"payment_method_types[{i}]", t) for i, t in enumerate(d["payment_method_types"])]
    params += flatten({"metadata": pid.get("metadata") or {}})
    if pid.get("capture_method"):
        params.append(("capture_method", str(pid["capture_method"])))
    status, pi = await emu.ls("POST", "/v1/payment_intents", auth, params)
    if status == 402:
        return _form_page(sess, DECLINED, 402, values)
    if status != 200:
        return _form_page(sess, _err_message(pi, "Something went wrong."), 502, values)
    d["payment_intent"] = pi["id"]
    if pi["status"] == "requires_action":
        sess.pending = {"kind": "payment_intent", "id": pi["id"], "client_secret": pi["client_secret"],
                        "pm": pm_id}
        return _auth_page(sess)
    return _finish_payment(emu, sess, pi)


async def _finish_setup(emu: Emulator, sess: CheckoutSession, pm_id: str,
                        values: dict[str, str] | None = None) -> web.Response:
    # localstripe's SetupIntent confirmation does not attach the card to the customer: do it here.
    status, body = await emu.ls("POST", f"/v1/payment_methods/{pm_id}/attach", sess.authorization,
                                [("customer", sess.data["customer"])])
    if status == 402:
        return _form_page(sess, DECLINED, 402, values)
    if status != 200:
        return _form_page(sess, _err_message(body, "Something went wrong."), 502, values)
    sess.data["status"] = "complete"
    sess.data["payment_status"] = "no_payment_required"
    return _complete(emu, sess)


def _finish_payment(emu: Emulator, sess: CheckoutSession, pi: dict[str, Any]) -> web.Response:
    if pi["status"] not in ("succeeded", "requires_capture", "processing"):
        return _form_page(sess, DECLINED, 402)
    sess.data["status"] = "complete"
    sess.data["payment_status"] = "paid" if pi["status"] != "processing" else "unpaid"
    return _complete(emu, sess)


def _complete(emu: Emulator, sess: CheckoutSession) -> web.Response:
    sess.pending = None
    emu.create_event("checkout.session.completed", sess.data)
    location = sess.data["success_url"].replace("{CHECKOUT_SESSION_ID}", sess.id)
    raise web.HTTPSeeOther(location=location)


async def hosted_authenticate(request: web.Request) -> web.Response:
    emu = _emu(request)
    sess = emu.sessions.get(request.match_info["id"])
    if sess is None:
        return _page("Not found", "<p>No such Checkout Session.</p>", 404)
    if sess.data["status"] != "open":
        return _closed_page(sess)
    pending = sess.pending
    if not pending:
        raise web.HTTPSeeOther(location=f"/checkout/{sess.id}")
    form = await request.post()
    success = form.get("result") == "complete"
    auth = sess.authorization
    sess.pending = None
    if pending["kind"] == "setup_intent":
        if not success:
            await emu.ls("POST", f"/v1/setup_intents/{pending['id']}/cancel", auth, [])
            return _form_page(sess, AUTH_FAILED, 402)
        # localstripe: confirming a requires_action SetupIntent again (no params) marks it succeeded.
        status, si = await emu.ls("POST", f"/v1/setup_intents/{pending['id']}/confirm", auth, [])
        if status != 200 or si.get("status") != "succeeded":
            return _form_page(sess, _err_message(si, AUTH_FAILED), 402)
        return await _finish_setup(emu, sess, pending["pm"])
    status, pi = await emu.ls("POST", f"/v1/payment_intents/{pending['id']}/_authenticate", auth,
                              [("client_secret", pending["client_secret"]),
                               ("success", "true" if success else "false")])
    if status == 402:
        return _form_page(sess, DECLINED, 402)
    if status != 200:
        return _form_page(sess, _err_message(pi, "Something went wrong."), 502)
    if not success:
        return _form_page(sess, AUTH_FAILED, 402)
    return _finish_payment(emu, sess, pi)


# ---------------------------------------------------------------------------------------------------------
# app and localstripe child process


async def passthrough(request: web.Request) -> web.Response:
    return await _emu(request).forward(request)


def build_app(emulator: Emulator) -> web.Application:
    app = web.Application(middlewares=[fault_middleware, idempotency_middleware],
                          client_max_size=16 * 1024 * 1024)
    app["emulator"] = emulator
    r = app.router
    r.add_get("/_emulator/health", health)
    r.add_get("/_emulator/faults", list_faults)
    r.add_post("/_emulator/faults", set_fault)
    r.add_delete("/_emulator/faults", clear_faults)
    r.add_get("/_emulator/deliveries", list_deliveries)
    r.add_post("/_emulator/void", void)
    r.add_delete("/_config/data", config_data)
    r.add_post("/_config/webhooks/{id}", config_webhook)
    r.add_get("/v1/events", list_events)
    r.add_get("/v1/events/{id}", retrieve_event)
    r.add_post("/v1/checkout/sessions", create_session)
    r.add_get("/v1/checkout/sessions", list_sessions)
    r.add_get("/v1/checkout/sessions/{id}", retrieve_session)
    r.add_get("/v1/checkout/sessions/{id}/line_items", session_line_items)
    r.add_post("/v1/checkout/sessions/{id}/expire", expire_session)
    r.add_get("/checkout/{id}", hosted_page)
    r.add_post("/checkout/{id}", hosted_submit)
    r.add_post("/checkout/{id}/authenticate", hosted_authenticate)
    r.add_route("*", "/{tail:.*}", passthrough)
    return app


def localstripe_command(port: int) -> list[str]:
    script = Path(sys.executable).parent / "localstripe"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "localstripe"]
    return base + ["--port", str(port), "--from-scratch"]


async def wait_for_localstripe(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"localstripe exited with code {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url + "/v1/events?limit=1",
                                    headers={"Authorization": "Bearer sk_test_emulator_boot"},
                                    timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"localstripe did not answer on {url} within {timeout:.0f} s")


def start_localstripe(verbose: bool) -> tuple[subprocess.Popen, int]:
    last_error: Exception | None = None
    for _ in range(3):
        port = free_port()
        proc = subprocess.Popen(
            localstripe_command(port), stdin=subprocess.DEVNULL,
            stdout=None if verbose else subprocess.DEVNULL, stderr=None if verbose else subprocess.DEVNULL,
            preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None)
        try:
            asyncio.run(wait_for_localstripe(f"http://127.0.0.1:{port}", proc, 15))
            return proc, port
        except RuntimeError as exc:
            last_error = exc
            stop_child(proc)
    raise RuntimeError(f"could not start localstripe: {last_error}")


def stop_child(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.stripe_emulator",
                                     description="Paydesk dev/test Stripe emulator (localstripe + extras)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111, help="0 picks a free port")
    parser.add_argument("--public-url", default=None,
                        help="base URL browsers use to reach this service (hosted Checkout page links)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log requests and localstripe output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s stripe-emulator %(levelname)s %(message)s")

    proc, ls_port = start_localstripe(args.verbose)
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        port = sock.getsockname()[1]
        host = f"[{args.host}]" if ":" in args.host else args.host
        public_url = args.public_url or f"http://{host}:{port}"
        emulator = Emulator(f"http://127.0.0.1:{ls_port}", public_url)
        app = build_app(emulator)

        async def on_startup(app: web.Application) -> None:
            emulator.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

        async def on_cleanup(app: web.Application) -> None:
            for task in list(emulator.background):
                task.cancel()
            if emulator.http is not None:
                await emulator.http.close()

        async def announce(app: web.Application) -> None:
            print(f"stripe emulator listening on http://{host}:{port}", flush=True)

        app.on_startup.append(on_startup)
        app.on_startup.append(announce)
        app.on_cleanup.append(on_cleanup)
        web.run_app(app, sock=sock, print=None, access_log=log if args.verbose else None,
                    handle_signals=True)
    finally:
        stop_child(proc)
