"""careflow: customer-care and retention campaigns over a SQL customer database.

The core package holds what every other folder leans on: settings, the
database schema and its migrations, the contact-history ledger, message and
outcome types, the template renderer, errors and the CLI. Segments, channels
and flows live in their own top-level folders (see docs/architecture.md).
"""

__version__ = "0.1.0"
