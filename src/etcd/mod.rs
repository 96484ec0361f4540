//! etcd layer (see DESIGN.md).
