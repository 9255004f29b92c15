"""Loading a shop's data from files into the careflow database (``careflow import``)."""
