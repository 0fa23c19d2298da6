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
#[derive(Clone, Copy)]
pub(crate) enum Conv {
    /// Stored as is.
    Same,
    /// A narrow integer stored widened (prost has no 8- or 16-bit fields); checked when
    /// decoding, so an out-of-range value from a peer is a decode failure, not a truncation.
    Narrow,
    /// A user message stored as `Option<T>` (how prost holds a message field); absent on
    /// the wire means the default value, as in protobuf.
    Message,
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
        match self.conv {
            Conv::Same => value,
            Conv::Narrow => quote!(::core::convert::From::from(#value)),
            Conv::Message => quote!(::core::option::Option::Some(#value)),
        }
    }

    /// Expression of type `Result<T, WireError>` turning a stored value back.
    pub(crate) fn decode_expr(&self, value: TokenStream, name: &str) -> TokenStream {
        match self.conv {
            Conv::Same => {
                quote!(::core::result::Result::<_, ::snakemq::__private::WireError>::Ok(#value))
            }
            Conv::Narrow => quote!(::snakemq::__private::narrow(#value, #name)),
            Conv::Message => {
                quote!(::core::result::Result::<_, ::snakemq::__private::WireError>::Ok(
                    ::core::option::Option::unwrap_or_default(#value)
                ))
            }
        }
    }
}

const SUPPORTED: &str = "supported RPC types: i8..i64, u8..u64, f32, f64, bool, String, Vec<u8>, \
     Bytes, Vec<T>, Option<T> and user types deriving prost::Message";

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

/// The element kind for a type inside `Vec<..>` or `Option<..>`: the prost kind and
/// whether it is a message.
fn inner_kind(ty: &Type) -> syn::Result<TokenStream> {
    let Some((name, args, other)) = path_parts(ty) else {
        return Err(unsupported(ty, "unsupported type in an RPC signature"));
    };
    if other {
        return Err(unsupported(ty, "unsupported type in an RPC signature"));
    }
    if args.is_empty() {
        if let Some((kind, narrow)) = scalar(&name) {
            if narrow.is_some() {
                return Err(unsupported(
                    ty,
                    "8- and 16-bit integers are supported only as plain arguments and results",
                ));
            }
            let kind = syn::Ident::new(kind, ty.span());
            return Ok(quote!(#kind));
        }
        if name == "Bytes" {
            return Ok(quote!(bytes = "bytes"));
        }
        return Ok(quote!(message));
    }
    if name == "Vec" && args.len() == 1 && args.first().is_some_and(|t| is_u8(t)) {
        return Ok(quote!(bytes = "vec"));
    }
    Err(unsupported(ty, "unsupported type nested in Vec or Option"))
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
                attr: quote!(message, optional),
                stored: quote_spanned!(ty.span()=> ::core::option::Option<#ty>),
                conv: Conv::Message,
            })
        }
        ("Vec", [inner]) if is_u8(inner) => Ok(Mapping {
            attr: quote!(bytes = "vec"),
            stored,
            conv: Conv::Same,
        }),
        ("Vec", [inner]) => {
            let kind = inner_kind(inner)?;
            Ok(Mapping {
                attr: quote!(#kind, repeated),
                stored,
                conv: Conv::Same,
            })
        }
        ("Option", [inner]) => {
            if matches!(path_parts(inner), Some((n, a, _)) if n == "Vec" && !(a.len() == 1 && a.first().is_some_and(|t| is_u8(t))))
            {
                return Err(unsupported(
                    ty,
                    "Option<Vec<T>> has no protobuf form, use Vec<T>",
                ));
            }
            let kind = inner_kind(inner)?;
            Ok(Mapping {
                attr: quote!(#kind, optional),
                stored,
                conv: Conv::Same,
            })
        }
        _ => Err(unsupported(ty, "unsupported type in an RPC signature")),
    }
}
