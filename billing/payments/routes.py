"""``/v1/invoices/{id}/pay``, ``/v1/invoices/{id}/refund`` and ``/v1/payments``."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from billing.core.pagination import Limit, Page, PageRequest, StartingAfter
from billing.invoicing.actions import read_invoice
from billing.invoicing.schemas import InvoiceOut
from billing.payments import queries
from billing.payments.charge import pay_now
from billing.payments.refunds import refund_invoice
from billing.payments.schemas import PaymentOut, RefundIn, payment_out
from billing.payments.views import PAYMENTS
from billing.web.auth import ADMIN, FINANCE, READ, scopes
from billing.web.dependencies import Caller, Ctx
from billing.web.params import CustomerFilter


class InvoicePaymentController(Controller):
    path = "/invoices/{invoice_id:str}"
    tags = ["Payments"]

    @post("/pay", opt=scopes(FINANCE), status_code=200, summary="Charge an open invoice now")
    async def pay(self, ctx: Ctx, principal: Caller, invoice_id: FromPath[str]) -> InvoiceOut:
        await pay_now(ctx, principal.tenant_id, invoice_id)
        return await read_invoice(ctx, principal.tenant_id, invoice_id, PAYMENTS)

    @post("/refund", opt=scopes(ADMIN), status_code=200, summary="Refund a paid invoice, fully or in part")
    async def refund(
        self, ctx: Ctx, principal: Caller, invoice_id: FromPath[str], data: JSONBody[RefundIn]
    ) -> InvoiceOut:
        await refund_invoice(ctx, principal.tenant_id, invoice_id, data.amount, actor=principal.key_id)
        return await read_invoice(ctx, principal.tenant_id, invoice_id, PAYMENTS)


PaymentStatus = Annotated[
    Literal["pending", "succeeded", "failed", "requires_action"] | None,
    QueryParameter(description="Payment status"),
]


FlaggedFilter = Annotated[bool | None, QueryParameter(description="Pending for more than a day")]


class PaymentController(Controller):
    path = "/payments"
    tags = ["Payments"]

    @get(opt=scopes(READ), summary="List payment attempts, newest first")
    async def list_payments(
        self,
        ctx: Ctx,
        principal: Caller,
        limit: Limit = 20,
        starting_after: StartingAfter = None,
        invoice: Annotated[str | None, QueryParameter(max_length=40)] = None,
        customer: CustomerFilter = None,
        status: PaymentStatus = None,
        flagged: FlaggedFilter = None,
    ) -> Page[PaymentOut]:
        async with ctx.database.read() as session:
            rows, has_more = await queries.list_payments(
                session,
                principal.tenant_id,
                PageRequest(limit, starting_after),
                customer=customer,
                invoice_id=invoice,
                status=status,
                flagged=flagged,
            )
        return Page([payment_out(row) for row in rows], has_more)

    @get("/{payment_id:str}", opt=scopes(READ), summary="Get a payment attempt")
    async def get_payment(self, ctx: Ctx, principal: Caller, payment_id: FromPath[str]) -> PaymentOut:
        async with ctx.database.read() as session:
            payment = await queries.get_payment(session, principal.tenant_id, payment_id)
        return payment_out(payment)
