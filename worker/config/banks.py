"""The SpareBank 1 banks and the address of each one's SpareBank 1 Regnskap.

Assumed from a third-party list (see the domain brief); kept as data so a wrong or new
address is a one-line change. An integration may also give ``sb1_base_url`` itself.
"""
BANKS: dict[str, str] = {
    "sor-norge": "https://regnskap.sb1sornorge.no",
    "ostlandet": "https://regnskap.sb1ostlandet.no",
    "nord-norge": "https://regnskap.snn.no",
    "smn": "https://regnskap.smn.no",
    "ostfold-akershus": "https://regnskap.sparebank1oa.no",
    "ringerike-hadeland": "https://regnskap.rhbank.no",
    "gudbrandsdal": "https://regnskap.s1g.no",
    "lom-og-skjak": "https://regnskap.sb1ls.no",
    "nordmore": "https://regnskap.bank.no",
    "hallingdal-valdres": "https://regnskap.sb1.no",
}
