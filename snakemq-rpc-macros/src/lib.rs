//! The `#[service]` attribute of snakemq's typed RPC. Use it as `#[snakemq::service]`: the
//! generated code reaches every dependency through `::snakemq::__private`, so a user's crate
//! needs no prost or bytes dependency of its own for the generated messages.
#![forbid(unsafe_code)]

mod codegen;
mod parse;
mod types;

use proc_macro::TokenStream;

/// Turns a trait of `async fn` methods into a typed RPC service.
///
/// For `trait Calculator` it generates `CalculatorClient` (created with
/// `CalculatorClient::new(&rpc, peer, object)`), `CalculatorServer` (wraps an
/// implementation; register it with `Rpc::serve`), and one prost message per method's
/// arguments and result. The trait's methods become `fn .. -> impl Future + Send`, which
/// an implementation writes as plain `async fn`.
///
/// A method returning `Result<T, E>` carries `E` to the caller: the client method returns
/// `Result<Result<T, E>, RpcError>`. `#[signal]` marks a one-way method returning `()`;
/// `#[signal(ttl = "30s")]` bounds how long it may wait for the peer and
/// `#[signal(persistent)]` commits it to the caller's durable store before the client
/// method returns, so it survives a restart of the caller (both may be given).
///
/// Arguments, results and errors may be: `i8`..`i64`, `u8`..`u64` (8- and 16-bit integers
/// travel widened and are range-checked on arrival), `f32`, `f64`, `bool`, `String`,
/// `Vec<u8>` and `Bytes` (protobuf bytes), `Vec<T>` and `Option<T>` of those or of a
/// message, `HashMap<K, V>` and `BTreeMap<K, V>` (keys: 32/64-bit integers, `bool` or
/// `String`; values: 32/64-bit scalars, `String`, `Vec<u8>` or a message), and user types
/// deriving `prost::Message`. Anything else, a method that is not `async fn`, a receiver
/// other than `&self`, a pattern in an argument and generics are compile errors pointing at
/// the offending tokens.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = proc_macro2::TokenStream::from(attr);
    if !attr.is_empty() {
        return syn::Error::new_spanned(attr, "#[service] takes no arguments")
            .to_compile_error()
            .into();
    }
    let item = syn::parse_macro_input!(item as syn::ItemTrait);
    let original = item.clone();
    match parse::service(item) {
        Ok(service) => codegen::expand(&service).into(),
        Err(error) => {
            let error = error.to_compile_error();
            let fallback = fallback(original);
            quote::quote!(#error #fallback).into()
        }
    }
}

/// The trait as written, emitted next to the macro's errors so that a user's
/// `impl Trait for ..` and other uses still resolve: the user sees the macro's message and
/// not a cascade of "cannot find trait" errors. What would add errors of its own goes:
/// `#[signal]` attributes (no such attribute outside the macro) and argument patterns
/// (not allowed in methods without a body; `_` is).
fn fallback(mut item: syn::ItemTrait) -> proc_macro2::TokenStream {
    for trait_item in &mut item.items {
        if let syn::TraitItem::Fn(f) = trait_item {
            f.attrs.retain(|a| !a.path().is_ident("signal"));
            for input in &mut f.sig.inputs {
                if let syn::FnArg::Typed(typed) = input {
                    let plain = matches!(&*typed.pat, syn::Pat::Ident(p)
                        if p.by_ref.is_none() && p.mutability.is_none() && p.subpat.is_none());
                    if !plain {
                        *typed.pat = syn::parse_quote!(_);
                    }
                }
            }
        }
    }
    quote::quote! {
        #[allow(async_fn_in_trait)]
        #item
    }
}
