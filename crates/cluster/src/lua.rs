//! The Lua scripts that make each multi-key change atomic, one file per script in `lua/`,
//! each prefixed with the shared helpers of `lua/lib.lua`. Scripts are sent by hash and
//! loaded again when Redis answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`).

use std::sync::LazyLock;

use redis::Script;

const LIB: &str = include_str!("lua/lib.lua");

macro_rules! scripts {
    ($($name:ident => $file:literal,)*) => {
        $(
            pub(crate) static $name: LazyLock<Script> =
                LazyLock::new(|| Script::new(&[LIB, include_str!(concat!("lua/", $file))].concat()));
        )*
    };
}

scripts! {
    RENEW => "renew.lua",
    NODES => "nodes.lua",
    LEAVE => "leave.lua",
    REAP => "reap.lua",
    CLAIM => "claim.lua",
    UPDATE_METADATA => "update_metadata.lua",
    DELETE_ROOM => "delete_room.lua",
    LIST_ROOMS => "list_rooms.lua",
    ADD_INSTANCE => "add_instance.lua",
    REMOVE_INSTANCE => "remove_instance.lua",
    INSTANCES => "instances.lua",
    SET_IDENTITY => "set_identity.lua",
    CLEAR_IDENTITY => "clear_identity.lua",
    IDENTITY => "identity.lua",
    RESERVE => "reserve.lua",
    RELEASE => "release.lua",
    COUNT => "count.lua",
    REREGISTER => "reregister.lua",
}
