"""Redeeming vouchers through the service, against PostgreSQL: credits, errors without side
effects, and the concurrency guarantees (max redemptions, once per customer)."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.billing import vouchers as v
from app.billing.ledger import ledger_balance
from app.models import AuditLog, LedgerEntry, SettlementRequest, User
from app.models.base import utcnow
from app.models.voucher import Voucher, VoucherRedemption

pytestmark = pytest.mark.integration


def make_vouchers(session, *, count=1, value_cents=2500, max_redemptions=1, expires_at=None, note=None, actor_id=None):
    created = v.create_voucher_batch(
        session,
        actor_id=actor_id,
        count=count,
        value_cents=value_cents,
        max_redemptions=max_redemptions,
        expires_at=expires_at,
        note=note,
        request_key=f"test-{v.generate_code()}",
    )
    return created


def one_code(session, **kwargs) -> tuple[int, str]:
    created = make_vouchers(session, **kwargs)
    voucher, code = created.codes[0]
    return voucher.id, code


def voucher_state(session, customer_id):
    session.expire_all()
    user = session.get(User, customer_id)
    return {
        "balance": user.voucher_balance_cents,
        "cash": user.cash_balance_cents,
        "ledger": session.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.customer_id == customer_id)),
        "redemptions": session.scalar(
            select(func.count()).select_from(VoucherRedemption).where(VoucherRedemption.customer_id == customer_id)
        ),
        "settlement_requests": session.scalar(
            select(func.count()).select_from(SettlementRequest).where(SettlementRequest.customer_id == customer_id)
        ),
    }


def test_redeeming_credits_the_voucher_balance_through_the_ledger_and_requests_settlement(session, factory):
    customer = factory.customer()
    voucher_id, code = one_code(session, value_cents=2500)

    result = v.redeem_voucher(session, customer_id=customer.id, code=code)

    assert result == v.Redeemed(voucher_id, 2500)
    state = voucher_state(session, customer.id)
    assert state == {"balance": 2500, "cash": 0, "ledger": 1, "redemptions": 1, "settlement_requests": 1}
    entry = session.scalar(select(LedgerEntry).where(LedgerEntry.customer_id == customer.id))
    assert (entry.account, entry.amount_cents, entry.kind) == ("voucher", 2500, "voucher")
    assert entry.idempotency_key == f"voucher:{voucher_id}:{customer.id}"
    assert ledger_balance(session, customer.id, "voucher") == 2500
    assert session.get(Voucher, voucher_id).redemptions_count == 1
    redemption = session.scalar(select(VoucherRedemption))
    assert redemption.ledger_entry_id == entry.id and redemption.amount_cents == 2500


def test_codes_are_stored_only_as_a_hash_with_a_short_prefix(session):
    created = make_vouchers(session, count=3)
    for voucher, code in created.codes:
        row = session.get(Voucher, voucher.id)
        canonical = v.normalise_code(code)
        assert row.code_hash == v.code_hash(canonical)
        assert row.code_prefix == canonical[:4]
        stored = " ".join(str(value) for value in row.__dict__.values())
        assert canonical not in stored and code not in stored


def test_a_code_typed_in_lowercase_with_spaces_still_works(session, factory):
    customer = factory.customer()
    _, code = one_code(session, value_cents=1000)
    sloppy = " " + code.lower().replace("-", " ") + " "
    v.redeem_voucher(session, customer_id=customer.id, code=sloppy)
    assert voucher_state(session, customer.id)["balance"] == 1000


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        ("unknown", v.VoucherNotFound),
        ("malformed", v.MalformedCode),
        ("expired", v.VoucherExpired),
        ("disabled", v.VoucherDisabled),
        ("exhausted", v.VoucherExhausted),
        ("already", v.AlreadyRedeemed),
    ],
)
def test_refused_redemptions_say_why_and_change_nothing(session, factory, setup, error):
    customer = factory.customer()
    other = factory.customer()
    voucher_id, code = one_code(session, value_cents=700, max_redemptions=1 if setup == "exhausted" else 5)
    if setup == "unknown":
        code = v.generate_code()
    elif setup == "malformed":
        code = code[:-2]
    elif setup == "expired":
        session.get(Voucher, voucher_id).expires_at = utcnow() - timedelta(seconds=1)
        session.commit()
    elif setup == "disabled":
        v.disable_voucher(session, actor_id=None, voucher_id=voucher_id)
    elif setup == "exhausted":
        v.redeem_voucher(session, customer_id=other.id, code=code)
    elif setup == "already":
        v.redeem_voucher(session, customer_id=customer.id, code=code)
    before = voucher_state(session, customer.id)
    count_before = session.get(Voucher, voucher_id).redemptions_count

    with pytest.raises(error) as refused:
        v.redeem_voucher(session, customer_id=customer.id, code=code)

    assert str(refused.value) == error.message
    assert voucher_state(session, customer.id) == before
    assert session.get(Voucher, voucher_id).redemptions_count == count_before


def test_a_voucher_redeems_once_per_customer_until_its_maximum(session, factory):
    customers = [factory.customer() for _ in range(4)]
    voucher_id, code = one_code(session, value_cents=300, max_redemptions=3)
    for customer in customers[:3]:
        v.redeem_voucher(session, customer_id=customer.id, code=code)
    with pytest.raises(v.VoucherExhausted):
        v.redeem_voucher(session, customer_id=customers[3].id, code=code)
    session.expire_all()
    assert session.get(Voucher, voucher_id).redemptions_count == 3
    assert [session.get(User, c.id).voucher_balance_cents for c in customers] == [300, 300, 300, 0]


def _race(app, n, target):
    """Run target(i, session) in n threads released at the same moment, each with its own session."""
    maker = app.extensions["paydesk_sessionmaker"]
    barrier = threading.Barrier(n)
    outcomes: list = [None] * n

    def run(i):
        with app.app_context():
            s = maker()
            try:
                barrier.wait(timeout=30)
                outcomes[i] = target(i, s)
            except Exception as exc:  # the outcome under test
                outcomes[i] = exc
            finally:
                s.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return outcomes


def test_twenty_customers_racing_for_a_single_use_code_exactly_one_wins(app, session, factory):
    customers = [factory.customer() for _ in range(20)]
    voucher_id, code = one_code(session, value_cents=5000, max_redemptions=1)

    outcomes = _race(app, 20, lambda i, s: v.redeem_voucher(s, customer_id=customers[i].id, code=code))

    winners = [o for o in outcomes if isinstance(o, v.Redeemed)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, (v.Redeemed, v.VoucherExhausted)) for o in outcomes), outcomes
    session.expire_all()
    assert session.get(Voucher, voucher_id).redemptions_count == 1
    assert session.scalar(select(func.count()).select_from(VoucherRedemption)) == 1
    assert session.scalar(select(func.count()).select_from(LedgerEntry)) == 1
    balances = [session.get(User, c.id).voucher_balance_cents for c in customers]
    assert sorted(balances) == [0] * 19 + [5000]
    for c in customers:
        assert session.get(User, c.id).voucher_balance_cents == ledger_balance(session, c.id, "voucher")


def test_one_customer_submitting_a_code_twenty_times_at_once_is_credited_once(app, session, factory):
    customer = factory.customer()
    voucher_id, code = one_code(session, value_cents=1234, max_redemptions=50)

    outcomes = _race(app, 20, lambda i, s: v.redeem_voucher(s, customer_id=customer.id, code=code))

    assert sum(isinstance(o, v.Redeemed) for o in outcomes) == 1, outcomes
    assert all(isinstance(o, (v.Redeemed, v.AlreadyRedeemed)) for o in outcomes), outcomes
    session.expire_all()
    entries = list(session.scalars(select(LedgerEntry).where(LedgerEntry.customer_id == customer.id)))
    assert [e.amount_cents for e in entries] == [1234]
    assert session.get(User, customer.id).voucher_balance_cents == ledger_balance(session, customer.id, "voucher") == 1234
    assert session.get(Voucher, voucher_id).redemptions_count == 1


def test_creating_a_batch_is_audited_without_the_codes_and_a_repeated_request_creates_nothing(session, factory):
    admin = factory.admin()
    created = v.create_voucher_batch(
        session, actor_id=admin.id, count=3, value_cents=1000, max_redemptions=2,
        expires_at=utcnow() + timedelta(days=30), note="Spring promo", request_key="req-1",
    )
    again = v.create_voucher_batch(
        session, actor_id=admin.id, count=3, value_cents=1000, max_redemptions=2,
        expires_at=None, note=None, request_key="req-1",
    )
    assert created.created and len(created.codes) == 3
    assert not again.created and again.codes == [] and again.batch.id == created.batch.id
    assert session.scalar(select(func.count()).select_from(Voucher)) == 3
    audit = session.scalars(select(AuditLog)).all()
    assert [(a.actor_id, a.action, a.target_type) for a in audit] == [(admin.id, "voucher.batch_created", "voucher_batch")]
    assert audit[0].after["count"] == 3 and audit[0].after["note"] == "Spring promo"
    dumped = str(audit[0].after)
    assert all(v.normalise_code(code)[4:] not in dumped for _, code in created.codes)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "between 1 and"),
        ({"count": 1001}, "between 1 and"),
        ({"value_cents": 0}, "greater than zero"),
        ({"max_redemptions": 0}, "at least 1"),
        ({"expires_at": "past"}, "future"),
    ],
)
def test_invalid_batches_are_refused(session, kwargs, message):
    args = {"count": 1, "value_cents": 100, "max_redemptions": 1, "expires_at": None}
    args.update(kwargs)
    if args["expires_at"] == "past":
        args["expires_at"] = utcnow() - timedelta(minutes=1)
    with pytest.raises(v.InvalidVoucherBatch, match=f"(?i){message}"):
        v.create_voucher_batch(session, actor_id=None, note=None, request_key="bad", **args)
    assert session.scalar(select(func.count()).select_from(Voucher)) == 0


def test_disabling_is_audited_once_and_keeps_credit_already_given(session, factory):
    admin = factory.admin()
    customer = factory.customer()
    voucher_id, code = one_code(session, value_cents=900, max_redemptions=5)
    v.redeem_voucher(session, customer_id=customer.id, code=code)

    v.disable_voucher(session, actor_id=admin.id, voucher_id=voucher_id)
    v.disable_voucher(session, actor_id=admin.id, voucher_id=voucher_id)

    session.expire_all()
    assert session.get(Voucher, voucher_id).status() == "disabled"
    audit = session.scalars(select(AuditLog).where(AuditLog.action == "voucher.disabled")).all()
    assert [(a.actor_id, a.target_id, a.before, a.after["disabled"]) for a in audit] == [
        (admin.id, str(voucher_id), {"disabled": False}, True)
    ]
    assert session.get(User, customer.id).voucher_balance_cents == 900


def test_the_csv_holds_every_new_code_once(session):
    created = make_vouchers(session, count=4, value_cents=1500, note="CSV, \"quoted\"")
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(v.codes_csv(created))))
    assert sorted(r["code"] for r in rows) == sorted(code for _, code in created.codes)
    assert {r["value_cents"] for r in rows} == {"1500"} and rows[0]["note"] == 'CSV, "quoted"'
    assert v.codes_csv_data_url(created).startswith("data:text/csv;charset=utf-8;base64,")


def test_the_demo_voucher_is_seeded_once_and_redeemable(session, factory):
    from app.demo import seed_demo

    lines = seed_demo(session)
    seed_demo(session)
    assert f"voucher: {v.DEMO_VOUCHER_CODE}" in lines
    assert session.scalar(select(func.count()).select_from(Voucher)) == 1
    customer = factory.customer()
    assert v.redeem_voucher(session, customer_id=customer.id, code=v.DEMO_VOUCHER_CODE.lower()).amount_cents == 5000
