//! Atomic file writes that keep mode and owner, and timestamped backups.
