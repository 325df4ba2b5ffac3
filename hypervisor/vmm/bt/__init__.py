"""Binary translation: translator, translation cache and the `bt` execution mode."""
