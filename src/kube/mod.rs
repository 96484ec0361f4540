//! kube layer (see DESIGN.md).
