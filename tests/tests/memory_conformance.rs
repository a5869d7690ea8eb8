//! The conformance suite against the in-memory reference runner.

flotilla_runner::conformance_tests!(flotilla_runner::testkit::MemoryHarness::default());
