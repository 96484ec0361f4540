//! rotate layer (see DESIGN.md).
