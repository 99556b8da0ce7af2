//! berth's cluster DNS (being written).
