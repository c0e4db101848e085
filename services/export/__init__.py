"""The export service: access and portability requests gathered into one bundle (DESIGN §2)."""
