"""The test suite; it mirrors the project's packages (decoder/, stages/, driver/, report/, settings/,
training/, embedded/), plus pipeline/ (end to end through Ray), infra/ (deployment) and support/ (shared
fixtures and tools). A package tree, so test modules import each other and `tests.support` by full name."""
