//! How a Rust type in an RPC signature is carried in a generated prost message.
//!
//! prost knows a fixed set of field types; everything here maps a signature type onto one of
//! them, or refuses it with an error pointing at the type (so the user sees the offending
//! argument, not a wall of prost-derive errors).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{GenericArgument, PathArguments, Type};

/// How a value is converted between the signature type and the stored field.
#[derive(Clone)]
pub(crate) enum Conv {
    /// Stored as is.
    Same,
    /// A narrow integer stored widened (prost has no 8- or 16-bit fields); checked when
    /// decoding, so an out-of-range value from a peer is a decode failure, not a truncation.
    Narrow,
    /// `Vec` of narrow integers stored as `Vec` of the wide type, each element checked when
    /// decoding.
    NarrowVec,
    /// `Option` of a narrow integer stored as `Option` of the wide type, checked when
    /// decoding.
    NarrowOption,
    /// A user message (the type, spanned on the signature) stored as its encoded bytes.
    ///
    /// On the wire a protobuf bytes field and an embedded message field are the same
    /// length-delimited record, so this is exactly what a `message` field would send. It
    /// is done here rather than by prost so that the encode and decode calls carry the
    /// type's span: a type that does not derive `prost::Message` gets one error at the
    /// signature, not a pile of them inside the generated derive.
    Message(TokenStream),
    /// `Vec` of a user message, stored as repeated bytes.
    MessageVec(TokenStream),
    /// `Option` of a user message, stored as optional bytes.
    MessageOption(TokenStream),
    /// A map with user message values (the whole map type and the value type), stored as a
    /// map of the same keys to bytes.
    MessageMap(TokenStream, TokenStream),
}

/// The prost field for one signature type.
pub(crate) struct Mapping {
    /// The inside of `#[prost(...)]` without the tag.
    pub(crate) attr: TokenStream,
    /// The field's Rust type.
    pub(crate) stored: TokenStream,
    /// The conversion.
    pub(crate) conv: Conv,
}

impl Mapping {
    /// Expression turning a signature value into the stored value.
    pub(crate) fn encode_expr(&self, value: TokenStream) -> TokenStream {
        match &self.conv {
            Conv::Same => value,
            Conv::Narrow => quote!(::core::convert::From::from(#value)),
            Conv::NarrowVec => quote!(::core::iter::Iterator::collect(
                ::core::iter::Iterator::map(
                    ::core::iter::IntoIterator::into_iter(#value),
                    ::core::convert::From::from,
                )
            )),
            Conv::NarrowOption => {
                quote!(::core::option::Option::map(#value, ::core::convert::From::from))
            }
            Conv::Message(ty) => {
                let encode = encode_fn(ty);
                quote!(#encode(&#value))
            }
            // The whole conversion carries the element type's span: rustc reports a
            // missing trait at the call that needs it, which would otherwise be `map`.
            Conv::MessageVec(ty) => {
                let encode = encode_fn(ty);
                quote_spanned!(ty.span()=> ::core::iter::Iterator::collect(
                    ::core::iter::Iterator::map(
                        ::core::iter::IntoIterator::into_iter(&#value),
                        #encode,
                    )
                ))
            }
            Conv::MessageOption(ty) => {
                let encode = encode_fn(ty);
                quote_spanned!(ty.span()=> ::core::option::Option::map(
                    ::core::option::Option::as_ref(&#value),
                    #encode,
                ))
            }
            Conv::MessageMap(_, ty) => {
                let encode = encode_fn(ty);
                quote_spanned!(ty.span()=> ::core::iter::Iterator::collect(
                    ::core::iter::Iterator::map(
                        ::core::iter::IntoIterator::into_iter(#value),
                        |(__k, __v)| (__k, ::std::vec::Vec::from(#encode(&__v))),
                    )
                ))
            }
        }
    }

    /// Expression of type `Result<T, WireError>` turning a stored value back.
    pub(crate) fn decode_expr(&self, value: TokenStream, name: &str) -> TokenStream {
        match &self.conv {
            Conv::Same => {
                quote!(::core::result::Result::<_, ::snakemq::__private::WireError>::Ok(#value))
            }
            Conv::Narrow => quote!(::snakemq::__private::narrow(#value, #name)),
            Conv::NarrowVec => quote!(::core::iter::Iterator::collect::<
                ::core::result::Result<::std::vec::Vec<_>, ::snakemq::__private::WireError>,
            >(::core::iter::Iterator::map(
                ::core::iter::IntoIterator::into_iter(#value),
                |__v| ::snakemq::__private::narrow(__v, #name),
            ))),
            Conv::NarrowOption => quote!(::core::option::Option::transpose(
                ::core::option::Option::map(#value, |__v| ::snakemq::__private::narrow(
                    __v, #name
                ))
            )),
            Conv::Message(ty) => {
                let decode = decode_fn(ty);
                quote!(#decode(#value))
            }
            Conv::MessageVec(ty) => {
                let decode = decode_fn(ty);
                quote_spanned!(ty.span()=> ::core::iter::Iterator::collect::<
                    ::core::result::Result<::std::vec::Vec<_>, ::snakemq::__private::WireError>,
                >(::core::iter::Iterator::map(
                    ::core::iter::IntoIterator::into_iter(#value),
                    #decode,
                )))
            }
            Conv::MessageOption(ty) => {
                let decode = decode_fn(ty);
                quote_spanned!(ty.span()=> ::core::option::Option::transpose(
                    ::core::option::Option::map(#value, #decode)
                ))
            }
            Conv::MessageMap(map, ty) => {
                let decode = decode_fn(ty);
                quote_spanned!(ty.span()=> ::core::iter::Iterator::collect::<
                    ::core::result::Result<#map, ::snakemq::__private::WireError>,
                >(::core::iter::Iterator::map(
                    ::core::iter::IntoIterator::into_iter(#value),
                    |(__k, __v)| ::core::result::Result::map(
                        #decode(::snakemq::__private::bytes::Bytes::from(__v)),
                        |__v| (__k, __v),
                    ),
                )))
            }
        }
    }
}

/// `encode::<T>` spanned on the user's type, so a missing `prost::Message` is reported there.
fn encode_fn(ty: &TokenStream) -> TokenStream {
    let span = ty.span();
    quote_spanned!(span=> ::snakemq::__private::encode::<#ty>)
}

/// `decode::<T>` spanned on the user's type.
fn decode_fn(ty: &TokenStream) -> TokenStream {
    let span = ty.span();
    quote_spanned!(span=> ::snakemq::__private::decode::<#ty>)
}

const SUPPORTED: &str = "supported RPC types: i8..i64, u8..u64, f32, f64, bool, String, Vec<u8>, \
     Bytes, Vec<T>, Option<T>, HashMap<K, V>, BTreeMap<K, V> and user types deriving \
     prost::Message";

/// The prost scalar for a plain type name, and whether it is a narrow integer.
fn scalar(name: &str) -> Option<(&'static str, Option<&'static str>)> {
    Some(match name {
        "i32" => ("int32", None),
        "i64" => ("int64", None),
        "u32" => ("uint32", None),
        "u64" => ("uint64", None),
        "f32" => ("float", None),
        "f64" => ("double", None),
        "bool" => ("bool", None),
        "String" => ("string", None),
        "i8" | "i16" => ("int32", Some("i32")),
        "u8" | "u16" => ("uint32", Some("u32")),
        _ => return None,
    })
}

/// The last path segment's name and its generic arguments, for a plain path type.
fn path_parts(ty: &Type) -> Option<(String, Vec<&Type>, bool)> {
    let Type::Path(path) = ty else { return None };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    let mut args = Vec::new();
    let mut other = false;
    match &last.arguments {
        PathArguments::None => {}
        PathArguments::AngleBracketed(angle) => {
            for arg in &angle.args {
                match arg {
                    GenericArgument::Type(t) => args.push(t),
                    _ => other = true,
                }
            }
        }
        PathArguments::Parenthesized(_) => other = true,
    }
    Some((last.ident.to_string(), args, other))
}

fn unsupported(ty: &Type, why: &str) -> syn::Error {
    syn::Error::new_spanned(ty, format!("{why}; {SUPPORTED}"))
}

/// The element of a `Vec<..>` or `Option<..>`: the prost kind, and the wide type when the
/// element is a narrow integer stored widened.
struct Inner {
    kind: TokenStream,
    wide: Option<syn::Ident>,
    /// A user message (stored as bytes, see [`Conv::Message`]).
    message: bool,
}

/// The element kind for a type inside `Vec<..>` or `Option<..>`.
fn inner_kind(ty: &Type) -> syn::Result<Inner> {
    let Some((name, args, other)) = path_parts(ty) else {
        return Err(unsupported(ty, "unsupported type in an RPC signature"));
    };
    if other {
        return Err(unsupported(ty, "unsupported type in an RPC signature"));
    }
    let plain = |kind| {
        Ok(Inner {
            kind,
            wide: None,
            message: false,
        })
    };
    if args.is_empty() {
        if let Some((kind, narrow)) = scalar(&name) {
            let kind = syn::Ident::new(kind, ty.span());
            return Ok(Inner {
                kind: quote!(#kind),
                wide: narrow.map(|wide| syn::Ident::new(wide, ty.span())),
                message: false,
            });
        }
        if name == "usize" || name == "isize" {
            return Err(unsupported(
                ty,
                "usize and isize differ between peers, use u64 or i64",
            ));
        }
        if name == "Bytes" {
            return plain(quote!(bytes = "bytes"));
        }
        return Ok(Inner {
            kind: quote!(bytes = "bytes"),
            wide: None,
            message: true,
        });
    }
    if name == "Vec" && args.len() == 1 && args.first().is_some_and(|t| is_u8(t)) {
        return plain(quote!(bytes = "vec"));
    }
    Err(unsupported(
        ty,
        "unsupported type nested in Vec or Option (only one level of nesting has a \
         protobuf form)",
    ))
}

/// The prost kind of a map key: integers (32 and 64 bits), bool and String.
fn map_key(ty: &Type) -> syn::Result<&'static str> {
    match path_parts(ty) {
        Some((name, args, false)) if args.is_empty() => match scalar(&name) {
            Some((kind, None)) if kind != "float" && kind != "double" => Ok(kind),
            _ => Err(unsupported(
                ty,
                "a map key must be i32, i64, u32, u64, bool or String",
            )),
        },
        _ => Err(unsupported(
            ty,
            "a map key must be i32, i64, u32, u64, bool or String",
        )),
    }
}

/// The prost kind of a map value: a 32/64-bit scalar, String, `Vec<u8>` or a message.
fn map_value(ty: &Type) -> syn::Result<&'static str> {
    let refuse = |why: &str| Err(unsupported(ty, why));
    match path_parts(ty) {
        Some((name, args, false)) if args.is_empty() => match scalar(&name) {
            Some((kind, None)) => Ok(kind),
            Some((_, Some(_))) => refuse(
                "8- and 16-bit integers cannot be map values (prost stores map values as \
                 they are), use i32 or u32",
            ),
            None if name == "Bytes" => refuse("a map value holds bytes as Vec<u8>, not Bytes"),
            None if name == "usize" || name == "isize" => {
                refuse("usize and isize differ between peers, use u64 or i64")
            }
            None => Ok("message"),
        },
        Some((name, args, false)) if name == "Vec" && args.len() == 1 => {
            if args.first().is_some_and(|t| is_u8(t)) {
                Ok("bytes")
            } else {
                refuse("a map value cannot be a Vec (other than Vec<u8>)")
            }
        }
        _ => refuse("unsupported map value type"),
    }
}

/// The two wrappers a field can have, which map the same way with their own label and
/// conversions.
#[derive(Clone, Copy)]
enum Wrapper {
    Vec,
    Option,
}

impl Wrapper {
    /// The prost label.
    fn label(self) -> TokenStream {
        match self {
            Wrapper::Vec => quote!(repeated),
            Wrapper::Option => quote!(optional),
        }
    }

    /// The wrapper around `inner`, as stored in the generated message.
    fn around(self, inner: TokenStream) -> TokenStream {
        match self {
            Wrapper::Vec => quote!(::std::vec::Vec<#inner>),
            Wrapper::Option => quote!(::core::option::Option<#inner>),
        }
    }
}

/// `Vec<T>` or `Option<T>` of a scalar, a narrow integer (widened on the wire) or a user
/// message (carried as its encoded bytes).
fn wrapped(wrapper: Wrapper, inner: &Type, stored: TokenStream) -> syn::Result<Mapping> {
    let Inner {
        kind,
        wide,
        message,
    } = inner_kind(inner)?;
    let label = wrapper.label();
    if message {
        let user = quote_spanned!(inner.span()=> #inner);
        return Ok(Mapping {
            attr: quote!(#kind, #label),
            stored: wrapper.around(quote!(::snakemq::__private::bytes::Bytes)),
            conv: match wrapper {
                Wrapper::Vec => Conv::MessageVec(user),
                Wrapper::Option => Conv::MessageOption(user),
            },
        });
    }
    Ok(match wide {
        None => Mapping {
            attr: quote!(#kind, #label),
            stored,
            conv: Conv::Same,
        },
        Some(wide) => Mapping {
            attr: quote!(#kind, #label),
            stored: wrapper.around(quote!(#wide)),
            conv: match wrapper {
                Wrapper::Vec => Conv::NarrowVec,
                Wrapper::Option => Conv::NarrowOption,
            },
        },
    })
}

fn is_u8(ty: &Type) -> bool {
    matches!(path_parts(ty), Some((name, args, false)) if name == "u8" && args.is_empty())
}

/// Maps one signature type.
pub(crate) fn map(ty: &Type) -> syn::Result<Mapping> {
    let stored = quote_spanned!(ty.span()=> #ty);
    let Some((name, args, other)) = path_parts(ty) else {
        return Err(unsupported(ty, "unsupported type in an RPC signature"));
    };
    if other {
        return Err(unsupported(ty, "unsupported type in an RPC signature"));
    }
    match (name.as_str(), args.as_slice()) {
        (name, []) => {
            if let Some((kind, narrow)) = scalar(name) {
                let kind = syn::Ident::new(kind, ty.span());
                return Ok(match narrow {
                    None => Mapping {
                        attr: quote!(#kind),
                        stored,
                        conv: Conv::Same,
                    },
                    Some(wide) => {
                        let wide = syn::Ident::new(wide, ty.span());
                        Mapping {
                            attr: quote!(#kind),
                            stored: quote!(#wide),
                            conv: Conv::Narrow,
                        }
                    }
                });
            }
            if name == "usize" || name == "isize" {
                return Err(unsupported(
                    ty,
                    "usize and isize differ between peers, use u64 or i64",
                ));
            }
            if name == "Bytes" {
                return Ok(Mapping {
                    attr: quote!(bytes = "bytes"),
                    stored,
                    conv: Conv::Same,
                });
            }
            Ok(Mapping {
                attr: quote!(bytes = "bytes"),
                stored: quote!(::snakemq::__private::bytes::Bytes),
                conv: Conv::Message(stored),
            })
        }
        ("Vec", [inner]) if is_u8(inner) => Ok(Mapping {
            attr: quote!(bytes = "vec"),
            stored,
            conv: Conv::Same,
        }),
        ("Vec", [inner]) => wrapped(Wrapper::Vec, inner, stored),
        ("Option", [inner]) => {
            if matches!(path_parts(inner), Some((n, a, _)) if n == "Vec" && !(a.len() == 1 && a.first().is_some_and(|t| is_u8(t))))
            {
                return Err(unsupported(
                    ty,
                    "Option<Vec<T>> has no protobuf form, use Vec<T>",
                ));
            }
            wrapped(Wrapper::Option, inner, stored)
        }
        ("HashMap" | "BTreeMap", [key, value]) => {
            // prost's own attribute: `map = "string, int64"` for a HashMap, `btree_map`
            // for a BTreeMap; the field keeps the type exactly as the user wrote it.
            let (key_kind, value_kind) = (map_key(key)?, map_value(value)?);
            let message = value_kind == "message";
            // Message values travel as bytes like a lone message (see `Conv::Message`).
            let spec = format!("{key_kind}, {}", if message { "bytes" } else { value_kind });
            let (attr, collection) = if name == "HashMap" {
                (quote!(map = #spec), quote!(::std::collections::HashMap))
            } else {
                (
                    quote!(btree_map = #spec),
                    quote!(::std::collections::BTreeMap),
                )
            };
            if message {
                return Ok(Mapping {
                    attr,
                    stored: quote!(#collection<#key, ::std::vec::Vec<u8>>),
                    conv: Conv::MessageMap(stored, quote_spanned!(value.span()=> #value)),
                });
            }
            Ok(Mapping {
                attr,
                stored,
                conv: Conv::Same,
            })
        }
        _ => Err(unsupported(ty, "unsupported type in an RPC signature")),
    }
}
