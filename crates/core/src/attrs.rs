//! The macro that turns an attribute table into an enum plus its metadata, so each spec's
//! attribute list is written exactly once.

/// `attribute_table!(EnumName, ATTRS_CONST; name: Type [zero], ...)` defines `EnumName` with one
/// variant per attribute (named exactly as upstream), the metadata slice, and `AttrSet`.
macro_rules! attribute_table {
    ($enum_name:ident, $table:ident; $( $name:ident : $ty:expr $(, $zero:ident)? ; )+) => {
        /// Attributes in upstream's order; variant names are upstream's attribute names.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $enum_name { $( $name, )+ }

        /// Column metadata in the same order as the enum.
        pub static $table: &[$crate::value::Attribute] = &[
            $( $crate::value::Attribute {
                name: $crate::attrs::strip_raw_prefix(stringify!($name)),
                column_type: $ty,
                zero_when_null: attribute_table!(@zero $($zero)?),
            }, )+
        ];

        impl $crate::record::AttrSet for $enum_name {
            fn attributes() -> &'static [$crate::value::Attribute] {
                $table
            }
            fn index(self) -> usize {
                self as usize
            }
            fn by_name(name: &str) -> Option<Self> {
                const ALL: &[$enum_name] = &[ $( $enum_name::$name, )+ ];
                $table.iter().position(|a| a.name == name).map(|i| ALL[i])
            }
        }
    };
    (@zero zero) => { true };
    (@zero) => { false };
}

pub(crate) use attribute_table;

/// `stringify!(r#type)` is `"r#type"`; the attribute's name is `type`.
pub(crate) const fn strip_raw_prefix(name: &'static str) -> &'static str {
    let bytes = name.as_bytes();
    if bytes.len() > 2 && bytes[0] == b'r' && bytes[1] == b'#' {
        name.split_at(2).1
    } else {
        name
    }
}
