"""Provider callbacks turned into careflow events: one module per provider."""
