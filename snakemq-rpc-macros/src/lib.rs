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
/// `Result<Result<T, E>, RpcError>`. `#[signal]` (optionally `#[signal(ttl = "30s")]`)
/// marks a one-way method returning `()`.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = proc_macro2::TokenStream::from(attr);
    if !attr.is_empty() {
        return syn::Error::new_spanned(attr, "#[service] takes no arguments")
            .to_compile_error()
            .into();
    }
    let item = syn::parse_macro_input!(item as syn::ItemTrait);
    match parse::service(item) {
        Ok(service) => codegen::expand(&service).into(),
        Err(error) => error.to_compile_error().into(),
    }
}
