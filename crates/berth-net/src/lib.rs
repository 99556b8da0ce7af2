//! berth's pod network (being written).
