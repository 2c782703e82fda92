"""Tax ids (a customer's, and the seller's on a tenant): format and check digits by
python-stdnum, stored compact and upper case. No VIES lookup."""

from __future__ import annotations

from types import ModuleType
from typing import Any, Literal

import msgspec
from stdnum import exceptions
from stdnum.au import abn
from stdnum.ch import vat as ch_vat
from stdnum.eu import vat as eu_vat
from stdnum.gb import vat as gb_vat
from stdnum.in_ import gstin
from stdnum.no import mva
from stdnum.us import ein

from billing.core.errors import FieldError, ValidationFailed

MAX_TAX_IDS = 5
VALUE_MAX_LENGTH = 64
TaxIdType = Literal["eu_vat", "gb_vat", "ch_vat", "no_vat", "au_abn", "in_gst", "us_ein"]
_CHECKERS: dict[str, ModuleType] = {
    "eu_vat": eu_vat,
    "gb_vat": gb_vat,
    "ch_vat": ch_vat,
    "no_vat": mva,
    "au_abn": abn,
    "in_gst": gstin,
    "us_ein": ein,
}
_COUNTRY_OF_TYPE = {
    "gb_vat": "GB",
    "ch_vat": "CH",
    "no_vat": "NO",
    "au_abn": "AU",
    "in_gst": "IN",
    "us_ein": "US",
}
# EU VAT prefixes that are not the ISO country code: Greece is EL, Northern Ireland XI.
_COUNTRY_OF_EU_PREFIX = {"EL": "GR", "XI": "GB"}


class TaxIdIn(msgspec.Struct, forbid_unknown_fields=True):
    type: TaxIdType
    value: str


class TaxIdMismatch(ValidationFailed):
    code = "tax_id_country_mismatch"


def tax_id(field: str, given: TaxIdIn) -> dict[str, Any]:
    """The stored tax id ``{type, value, country}``, or a 422 ``invalid_tax_id``."""
    if len(given.value) > VALUE_MAX_LENGTH:
        raise _invalid(field, given, f"must be at most {VALUE_MAX_LENGTH} characters")
    try:
        value = str(_CHECKERS[given.type].validate(given.value)).upper()
    except exceptions.ValidationError as exc:
        raise _invalid(field, given, str(exc)) from None
    if given.type == "eu_vat" and value.startswith("GR"):
        value = "EL" + value[2:]  # the prefix VIES and invoices use for Greece
    if given.type == "gb_vat":
        value = "GB" + value  # stdnum drops the prefix; it is how a UK VAT number is written
    return {"type": given.type, "value": value, "country": country_of(given.type, value)}


def tax_ids(field: str, given: list[TaxIdIn]) -> list[dict[str, Any]]:
    if len(given) > MAX_TAX_IDS:
        raise ValidationFailed.field(field, f"at most {MAX_TAX_IDS} tax ids")
    stored = [tax_id(f"{field}[{index}]", item) for index, item in enumerate(given)]
    seen = set()
    for index, item in enumerate(stored):
        key = (item["type"], item["value"])
        if key in seen:
            raise ValidationFailed.field(f"{field}[{index}]", "is listed twice")
        seen.add(key)
    return stored


def country_of(type_: str, value: str) -> str:
    """The ISO country of a stored tax id."""
    if type_ == "eu_vat":
        prefix = value[:2]
        return _COUNTRY_OF_EU_PREFIX.get(prefix, prefix)
    return _COUNTRY_OF_TYPE[type_]


def check_countries(field: str, stored: list[dict[str, Any]], country: str | None) -> None:
    """An EU VAT number's prefix must match the address's country when the address has one."""
    for index, item in enumerate(stored):
        check_country(f"{field}[{index}]", item, country)


def check_country(field: str, item: dict[str, Any], country: str | None) -> None:
    if country is None or item["type"] != "eu_vat" or item["country"] == country:
        return
    message = f"{item['value']} is a VAT number of {item['country']}, the address is in {country}"
    raise TaxIdMismatch(f"{field}: {message}", errors=[FieldError(field, message)])


def _invalid(field: str, given: TaxIdIn, reason: str) -> ValidationFailed:
    message = f"not a valid {given.type}: {reason}"
    return ValidationFailed(f"{field}: {message}", code="invalid_tax_id", errors=[FieldError(field, message)])
