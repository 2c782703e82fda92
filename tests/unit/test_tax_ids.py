"""Tax ids: real-looking numbers of every supported type, their check digits, the stored form,
and the EU VAT prefix against an address's country; tax rate percentages; country codes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.core.errors import ValidationFailed
from billing.tenants.addresses import countries, country
from billing.tenants.tax_ids import TaxIdIn, check_countries, tax_id, tax_ids
from billing.tenants.tax_rates import percentage

VALID = [
    ("eu_vat", "DE 136 695 976", "DE136695976", "DE"),
    ("eu_vat", "de136695976", "DE136695976", "DE"),
    ("eu_vat", "FR40303265045", "FR40303265045", "FR"),
    ("eu_vat", "fr 40 303 265 045", "FR40303265045", "FR"),
    ("eu_vat", "EL094259216", "EL094259216", "GR"),
    ("eu_vat", "GR094259216", "EL094259216", "GR"),  # written with the ISO code: stored as VIES writes it
    ("eu_vat", "ATU13585627", "ATU13585627", "AT"),
    ("eu_vat", "XI980780684", "XI980780684", "GB"),  # Northern Ireland
    ("gb_vat", "GB 980 7806 84", "GB980780684", "GB"),
    ("gb_vat", "980780684", "GB980780684", "GB"),
    ("ch_vat", "CHE-107.787.577 IVA", "CHE107787577IVA", "CH"),
    ("ch_vat", "che-116.281.710 mwst", "CHE116281710MWST", "CH"),
    ("no_vat", "NO 995 525 828 MVA", "995525828MVA", "NO"),
    ("au_abn", "51 824 753 556", "51824753556", "AU"),
    ("in_gst", "27aapfu0939f1zv", "27AAPFU0939F1ZV", "IN"),
    ("us_ein", "04-2103594", "042103594", "US"),
]

INVALID = [
    ("eu_vat", "DE136695977"),  # check digit
    ("eu_vat", "DE13669597"),  # length
    ("eu_vat", "FR40303265046"),
    ("eu_vat", "EL094259217"),
    ("eu_vat", "GB980780684"),  # not an EU prefix since 2021
    ("eu_vat", "CHE107787577"),
    ("eu_vat", "136695976"),  # no country prefix
    ("eu_vat", ""),
    ("gb_vat", "GB980780685"),
    ("gb_vat", "DE136695976"),
    ("ch_vat", "CHE-107.787.578 IVA"),
    ("no_vat", "995525829MVA"),
    ("au_abn", "51 824 753 557"),
    ("in_gst", "27AAPFU0939F1ZW"),
    ("in_gst", "99AAPFU0939F1ZV"),  # no such state
    ("us_ein", "07-2103594"),  # no IRS campus uses 07
    ("us_ein", "04-210359"),
    ("us_ein", "DE" + "1" * 100),
]


@pytest.mark.parametrize(("type_", "value", "stored", "where"), VALID)
def test_valid_numbers_are_stored_compact_and_upper_case(
    type_: str, value: str, stored: str, where: str
) -> None:
    assert tax_id("tax_ids[0]", TaxIdIn(type_, value)) == {"type": type_, "value": stored, "country": where}  # type: ignore[arg-type]


@pytest.mark.parametrize(("type_", "value"), INVALID)
def test_invalid_numbers_answer_invalid_tax_id_naming_the_field(type_: str, value: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        tax_id("tax_ids[2]", TaxIdIn(type_, value))  # type: ignore[arg-type]

    assert caught.value.error_code == "invalid_tax_id"
    assert [error.field for error in caught.value.errors] == ["tax_ids[2]"]


def test_at_most_five_and_no_duplicates() -> None:
    five = [TaxIdIn(type_, value) for type_, value, _, _ in VALID[::3]][:5]  # type: ignore[arg-type]
    assert len(tax_ids("tax_ids", five)) == 5
    with pytest.raises(ValidationFailed, match="at most 5"):
        tax_ids("tax_ids", [TaxIdIn("au_abn", "51824753556")] * 6)
    with pytest.raises(ValidationFailed) as caught:
        tax_ids("tax_ids", [TaxIdIn("eu_vat", "DE136695976"), TaxIdIn("eu_vat", "de 136 695 976")])
    assert caught.value.errors[0].field == "tax_ids[1]"


@pytest.mark.parametrize(
    ("value", "address_country", "fits"),
    [
        ("DE136695976", "DE", True),
        ("DE136695976", "AT", False),
        ("EL094259216", "GR", True),
        ("EL094259216", "EL", False),  # EL is no ISO country: an address says GR
        ("XI980780684", "GB", True),
        ("DE136695976", None, True),
    ],
)
def test_an_eu_vat_prefix_must_match_the_address_country(
    value: str, address_country: str | None, fits: bool
) -> None:
    stored = tax_ids("tax_ids", [TaxIdIn("us_ein", "04-2103594"), TaxIdIn("eu_vat", value)])
    if fits:
        check_countries("tax_ids", stored, address_country)
        return
    with pytest.raises(ValidationFailed) as caught:
        check_countries("tax_ids", stored, address_country)
    assert caught.value.error_code == "tax_id_country_mismatch"
    assert caught.value.errors[0].field == "tax_ids[1]"


def test_other_types_are_not_matched_against_the_address() -> None:
    check_countries("tax_ids", tax_ids("tax_ids", [TaxIdIn("gb_vat", "GB980780684")]), "DE")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "0"),
        ("19", "19"),
        ("7.5", "7.5"),
        ("100", "100"),
        ("100.0000", "100"),
        ("8.8750", "8.875"),
        ("0.0001", "0.0001"),
    ],
)
def test_percentages_from_0_to_100_with_at_most_4_decimals(value: str, expected: str) -> None:
    assert percentage("percentage", value) == Decimal(expected)


@pytest.mark.parametrize(
    "value",
    [
        "100.0001",
        "101",
        "-1",
        "-0",
        "+5",
        "1e2",
        "1E1",
        "NaN",
        "Infinity",
        "inf",
        "19.12345",
        "019",
        "19.",
        ".5",
        "",
        " 19",
        "19 ",
        "1_9",
        "١٩",
    ],
)
def test_anything_else_is_not_a_percentage(value: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        percentage("percentage", value)
    assert caught.value.error_code == "validation_error"
    assert caught.value.errors[0].field == "percentage"


def test_countries_are_the_249_iso_3166_codes() -> None:
    assert len(countries()) == 249
    assert {"DE", "GR", "GB", "US", "CH", "NO", "AU", "IN", "AX", "SS"} <= countries()
    for code in ["EL", "EU", "UK", "de", "XX", "ZZ", "DEU", ""]:
        with pytest.raises(ValidationFailed):
            country("address.country", code)
