"""The entry points package managers call: the pre-transaction gate (:mod:`.gate`) and the
post-install check (:mod:`.postinstall`), with the record of a transaction in flight."""
