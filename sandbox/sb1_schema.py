"""The platform's entity shapes: field names and relations, from the Swagger or embedded.

The SpareBank 1 stand-in uses this to refuse unknown fields, to know which fields are
nested objects (``Info``) or lists (``Info.Phones``), and to check filter/expand paths.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

# <repo>/../shared/domain/unieconomy-swagger.json
REPO_ROOT = Path(__file__).resolve().parents[1]
SWAGGER_PATH = REPO_ROOT.parent / "shared" / "domain" / "unieconomy-swagger.json"

# Business API routes the sandbox serves -> entity type (as in the Swagger's POST bodies).
ROUTES: dict[str, str] = {
    "customers": "Customer",
    "projects": "Project",
    "invoices": "CustomerInvoice",
    "journalentries": "JournalEntry",
    "accounts": "Account",
    "vattypes": "VatType",
    "currencycodes": "CurrencyCode",
    "countries": "Country",
}


@dataclass(frozen=True)
class EntityType:
    """One definition: scalar fields, nested objects (refs) and nested lists."""

    name: str
    scalars: frozenset[str]
    refs: dict[str, str] = field(default_factory=dict)   # field -> type of the nested object
    lists: dict[str, str] = field(default_factory=dict)  # field -> type of the list items

    @property
    def is_open(self) -> bool:
        """No known properties (e.g. ``CustomValues``): anything goes."""
        return not (self.scalars or self.refs or self.lists)

    def has(self, name: str) -> bool:
        return name in self.scalars or name in self.refs or name in self.lists

    def canonical(self, name: str) -> str | None:
        """The field's real spelling for a case-insensitive ``name``, or None."""
        if self.has(name):
            return name
        lowered = name.lower()
        for known in (*self.scalars, *self.refs, *self.lists):
            if known.lower() == lowered:
                return known
        return None

    def child_type(self, name: str) -> str | None:
        return self.refs.get(name) or self.lists.get(name)


@dataclass(frozen=True)
class Schema:
    types: dict[str, EntityType]
    source: str  # "swagger" or "embedded"

    def get(self, name: str | None) -> EntityType | None:
        return self.types.get(name) if name else None


def _from_swagger(path: Path) -> Schema:
    definitions = json.loads(path.read_text(encoding="utf-8"))["definitions"]
    types: dict[str, EntityType] = {}
    for name, definition in definitions.items():
        scalars, refs, lists = set(), {}, {}
        for prop, spec in (definition.get("properties") or {}).items():
            items = spec.get("items") or {}
            if "$ref" in spec:
                refs[prop] = spec["$ref"].rsplit("/", 1)[-1]
            elif spec.get("type") == "array" and "$ref" in items:
                lists[prop] = items["$ref"].rsplit("/", 1)[-1]
            else:
                scalars.add(prop)
        types[name] = EntityType(name, frozenset(scalars), refs, lists)
    return Schema(types, "swagger")


def _from_embedded() -> Schema:
    types: dict[str, EntityType] = {}
    for name, (scalars, relations) in EMBEDDED.items():
        refs, lists = {}, {}
        for relation in relations.split(","):
            prop, type_name = relation.split()
            if type_name.startswith("[]"):
                lists[prop] = type_name[2:]
            else:
                refs[prop] = type_name
        types[name] = EntityType(name, frozenset(scalars.split()), refs, lists)
    types["CustomValues"] = EntityType("CustomValues", frozenset())
    return Schema(types, "embedded")


@lru_cache(maxsize=4)
def load_schema(path: Path | None = SWAGGER_PATH) -> Schema:
    """The Swagger's definitions if the file is there, else the embedded subset."""
    if path is not None and Path(path).is_file():
        return _from_swagger(Path(path))
    return _from_embedded()


# Generated from unieconomy-swagger.json: type -> (scalar fields, "Field Type, List []Type").
EMBEDDED: dict[str, tuple[str, str]] = {
    "Customer": (
        "_createguid AcceptableDelta4CustomerPayment "
        "AcceptableDelta4CustomerPaymentAccountID AvtaleGiro AvtaleGiroAmount "
        "BusinessRelationID CreatedAt CreatedBy CreditDays CurrencyCodeID "
        "CustomerInvoiceReminderSettingsID CustomerNumber CustomerNumberKidAlias "
        "DefaultCustomerInvoiceReportID DefaultCustomerOrderReportID "
        "DefaultCustomerQuoteReportID DefaultDistributionsID DefaultSellerID Deleted "
        "DeliveryTermsID DimensionsID DontSendReminders EfakturaIdentifier "
        "EInvoiceAgreementReference FactoringNumber GLN ID IsPrivate Localization OrgNumber "
        "PaymentTermsID PeppolAddress ReminderEmailAddress StatusCode "
        "SubAccountNumberSeriesID UpdatedAt UpdatedBy WebUrl",
        "Info BusinessRelation, Distributions Distributions, PaymentTerms Terms, "
        "DeliveryTerms Terms, Dimensions Dimensions, CustomerInvoiceReminderSettings "
        "CustomerInvoiceReminderSettings, CustomerQuotes []CustomerQuote, CustomerOrders "
        "[]CustomerOrder, CustomerInvoices []CustomerInvoice, DefaultSeller Seller, Sellers "
        "[]SellerLink, Companies []SubCompany, CustomValues CustomValues"),
    "BusinessRelation": (
        "_createguid CreatedAt CreatedBy DefaultBankAccountID DefaultContactID "
        "DefaultEmailID DefaultPhoneID Deleted ID InvoiceAddressID Name ShippingAddressID "
        "StatusCode UpdatedAt UpdatedBy",
        "BankAccounts []BankAccount, DefaultContact Contact, Contacts []Contact, Addresses "
        "[]Address, Phones []Phone, Emails []Email, InvoiceAddress Address, ShippingAddress "
        "Address, DefaultPhone Phone, DefaultEmail Email, DefaultBankAccount BankAccount, "
        "CustomValues CustomValues"),
    "Email": (
        "_createguid BusinessRelationID CreatedAt CreatedBy Deleted Description "
        "EmailAddress ID StatusCode Type UpdatedAt UpdatedBy",
        "CustomValues CustomValues"),
    "Phone": (
        "_createguid BusinessRelationID CountryCode CreatedAt CreatedBy Deleted Description "
        "ID Number StatusCode Type UpdatedAt UpdatedBy",
        "CustomValues CustomValues"),
    "Address": (
        "_createguid AddressLine1 AddressLine2 AddressLine3 BusinessRelationID City Country "
        "CountryCode CreatedAt CreatedBy Deleted ID PostalCode Region StatusCode UpdatedAt "
        "UpdatedBy",
        "BusinessRelation BusinessRelation, CustomValues CustomValues"),
    "Project": (
        "_createguid Amount CostPrice CreatedAt CreatedBy Deleted Description DimensionsID "
        "EndDate ID IsUsed Name PlannedEnddate PlannedStartdate Price ProjectCustomerID "
        "ProjectLeadName ProjectNumber ProjectNumberNumeric ProjectNumberSeriesID StartDate "
        "StatusCode Total UpdatedAt UpdatedBy WorkPlaceAddressID",
        "ProjectCustomer Customer, WorkPlaceAddress Address, ProjectTasks []ProjectTask, "
        "ProjectResources []ProjectResource, CustomValues CustomValues"),
    "CurrencyCode": (
        "_createguid Code CreatedAt CreatedBy Deleted Description ID Name ShortCode "
        "UpdatedAt UpdatedBy",
        "CustomValues CustomValues"),
    "Account": (
        "_createguid AccountGroupID AccountID AccountName AccountNumber AccountSetupID "
        "Active CostAllocationID CreatedAt CreatedBy CurrencyCodeID CustomerID Deleted "
        "DimensionsID DoSynchronize EmployeeID ID Locked LockManualPosts StatusCode "
        "SupplierID SystemAccount TopLevelAccountGroupID UpdatedAt UpdatedBy UsePostPost "
        "UseVatDeductionGroupID VatTypeID Visible",
        "AccountGroup AccountGroup, TopLevelAccountGroup AccountGroup, VatType VatType, "
        "MainAccount Account, Customer Customer, Supplier Supplier, Employee Employee, "
        "Dimensions Dimensions, Alias []AccountAlias, ManatoryDimensions "
        "[]AccountManatoryDimension, CompatibleAccountGroups []AccountGroup, SubAccounts "
        "[]Account, CostAllocation CostAllocation, CustomValues CustomValues"),
    "VatType": (
        "_createguid Alias AvailableInModules CreatedAt CreatedBy Deleted "
        "DirectJournalEntryOnly ID IncomingAccountID InUse Locked Name OutgoingAccountID "
        "OutputVat ReversedTaxDutyVat StatusCode UpdatedAt UpdatedBy VatCode VatCodeGroupID "
        "VatCodeGroupingValue VatPercent VatTypeSetupID Visible",
        "IncomingAccount Account, OutgoingAccount Account, VatCodeGroup VatCodeGroup, "
        "VatReportReferences []VatReportReference, VatTypePercentages []VatTypePercentage, "
        "CustomValues CustomValues"),
    "JournalEntry": (
        "_createguid CreatedAt CreatedBy Deleted Description FinancialYearID ID "
        "JournalEntryAccrualID JournalEntryDraftGroup JournalEntryNumber "
        "JournalEntryNumberNumeric NumberSeriesID NumberSeriesTaskID StatusCode UpdatedAt "
        "UpdatedBy",
        "Lines []JournalEntryLine, DraftLines []JournalEntryLineDraft, JournalEntryAccrual "
        "Accrual, CustomValues CustomValues"),
    "JournalEntryLineDraft": (
        "_createguid AccountID AccrualID Amount AmountCurrency BatchNumber CreatedAt "
        "CreatedBy CurrencyCodeID CurrencyExchangeRate CustomerInvoiceID CustomerOrderID "
        "Deleted Description DimensionsID DueDate FinancialDate ID InvoiceNumber "
        "JournalEntryID JournalEntryNumber JournalEntryNumberNumeric JournalEntryTypeID "
        "PaymentID PaymentInfoTypeID PaymentReferenceID PeriodID PostPostJournalEntryLineID "
        "RegisteredDate Signature StatusCode SubAccountID SupplierInvoiceID TaxBasisAmount "
        "TaxBasisAmountCurrency UpdatedAt UpdatedBy VatDate VatDeductionPercent VatPercent "
        "VatPeriodID VatTypeID",
        "Dimensions Dimensions, Accrual Accrual, CustomValues CustomValues"),
    "Dimensions": (
        "_createguid CreatedAt CreatedBy Deleted DepartmentID Dimension10ID Dimension5ID "
        "Dimension6ID Dimension7ID Dimension8ID Dimension9ID ID ProjectID ProjectTaskID "
        "RegionID ResponsibleID StatusCode UpdatedAt UpdatedBy",
        "CustomValues CustomValues"),
    "Country": (
        "_createguid CountryCode CreatedAt CreatedBy CurrencyRateSource DefaultCurrencyCode "
        "Deleted ID Name UpdatedAt UpdatedBy",
        "CustomValues CustomValues"),
}
