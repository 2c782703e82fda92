"""``POST /v1/invoices/{id}/credit-notes`` and ``/v1/credit-notes``."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from billing.core.pagination import Limit, Page, PageRequest, StartingAfter
from billing.credit_notes import queries
from billing.credit_notes.issue import issue_credit_note
from billing.credit_notes.schemas import CreditNoteCreate, CreditNoteOut
from billing.web.auth import FINANCE, READ, Scope, scopes
from billing.web.dependencies import Caller, Ctx
from billing.web.params import CustomerFilter

InvoiceFilter = Annotated[str | None, QueryParameter(max_length=40, description="Invoice id")]


class InvoiceCreditNoteController(Controller):
    path = "/invoices/{invoice_id:str}/credit-notes"
    tags = ["Credit notes"]

    @post(opt=scopes(FINANCE), summary="Issue a credit note on an open or paid invoice")
    async def create_credit_note(
        self,
        ctx: Ctx,
        principal: Caller,
        invoice_id: FromPath[str],
        data: JSONBody[CreditNoteCreate],
    ) -> CreditNoteOut:
        return await issue_credit_note(
            ctx,
            principal.tenant_id,
            invoice_id,
            data,
            actor=principal.key_id,
            may_refund=principal.scope is Scope.ADMIN,
        )


class CreditNoteController(Controller):
    path = "/credit-notes"
    tags = ["Credit notes"]

    @get(opt=scopes(READ), summary="List credit notes, newest first")
    async def list_credit_notes(
        self,
        ctx: Ctx,
        principal: Caller,
        limit: Limit = 20,
        starting_after: StartingAfter = None,
        invoice: InvoiceFilter = None,
        customer: CustomerFilter = None,
    ) -> Page[CreditNoteOut]:
        async with ctx.database.read() as session:
            rows, has_more = await queries.list_notes(
                session,
                principal.tenant_id,
                PageRequest(limit, starting_after),
                invoice_id=invoice,
                customer=customer,
            )
            return Page(await queries.notes_out(session, rows), has_more)

    @get("/{credit_note_id:str}", opt=scopes(READ), summary="Get a credit note")
    async def get_credit_note(
        self, ctx: Ctx, principal: Caller, credit_note_id: FromPath[str]
    ) -> CreditNoteOut:
        async with ctx.database.read() as session:
            note = await queries.get_note(session, principal.tenant_id, credit_note_id)
            return (await queries.notes_out(session, [note]))[0]
