//! Live migration protocol (to come).
