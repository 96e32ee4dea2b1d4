"""The bottom layer every other one uses: errors, records, atomic files, the journal, the hook
deadline, kernel-release names and the Transaction record. It imports nothing else of kzguard."""
