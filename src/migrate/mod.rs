//! migrate layer (see DESIGN.md).
