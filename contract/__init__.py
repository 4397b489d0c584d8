"""The platform's contract: the definitions of SpareBank 1 Regnskap's own Swagger that the
integration uses (``unieconomy-swagger.json``, made by ``scripts/update-contract``)."""
from pathlib import Path

SWAGGER = Path(__file__).with_name("unieconomy-swagger.json")
