"""Developer tools that build real artefacts (modules, DKMS trees, root trees) for tests,
examples and benchmarks. Not shipped in the kzguard package."""
