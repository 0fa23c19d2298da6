//! Checking a `#[service]` trait and collecting its methods.
//!
//! Every refusal is a `syn::Error` spanned on the offending tokens, so the compiler points
//! at the exact argument, receiver or keyword.

use std::time::Duration;

use syn::{FnArg, ItemTrait, Pat, ReturnType, TraitItem, TraitItemFn, Type};

use crate::types::{self, Mapping};

/// One argument.
pub(crate) struct Arg {
    pub(crate) ident: syn::Ident,
    pub(crate) ty: Type,
    pub(crate) mapping: Mapping,
}

/// What a method returns.
// One per method, alive only while the macro runs: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Output {
    /// `()`.
    Unit,
    /// A value.
    Value(Type, Mapping),
    /// `Result<T, E>`: `T` (or `()`) and `E`.
    Result(Option<(Type, Mapping)>, Type, Mapping),
}

/// One method.
pub(crate) struct Method {
    pub(crate) item: TraitItemFn,
    pub(crate) args: Vec<Arg>,
    pub(crate) output: Output,
    /// `Some` for a signal: its options.
    pub(crate) signal: Option<SignalAttr>,
}

/// The checked trait.
pub(crate) struct Service {
    pub(crate) item: ItemTrait,
    pub(crate) methods: Vec<Method>,
}

pub(crate) fn service(mut item: ItemTrait) -> syn::Result<Service> {
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &item.generics,
            "an RPC service trait cannot be generic",
        ));
    }
    let mut methods = Vec::new();
    let mut errors: Option<syn::Error> = None;
    for trait_item in &mut item.items {
        let result = match trait_item {
            TraitItem::Fn(f) => method(f),
            other => Err(syn::Error::new_spanned(
                &*other,
                "an RPC service trait may only contain async fn methods",
            )),
        };
        match result {
            Ok(m) => methods.push(m),
            Err(e) => match &mut errors {
                Some(all) => all.combine(e),
                None => errors = Some(e),
            },
        }
    }
    if let Some(errors) = errors {
        return Err(errors);
    }
    Ok(Service { item, methods })
}

fn method(f: &mut TraitItemFn) -> syn::Result<Method> {
    let signal = take_signal(f)?;
    let sig = &f.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            sig.fn_token,
            "RPC methods must be `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "RPC methods cannot be generic",
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(syn::Error::new_spanned(v, "RPC methods cannot be variadic"));
    }
    if let Some(body) = &f.default {
        return Err(syn::Error::new_spanned(
            body,
            "RPC methods cannot have a default body",
        ));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        Some(FnArg::Receiver(r)) => {
            return Err(syn::Error::new_spanned(
                r,
                "RPC methods take `&self` (calls run concurrently on a shared implementation)",
            ));
        }
        _ => {
            return Err(syn::Error::new_spanned(
                &sig.ident,
                "RPC methods take `&self` as their first argument",
            ));
        }
    }
    let mut args = Vec::new();
    for input in inputs {
        let FnArg::Typed(typed) = input else {
            return Err(syn::Error::new_spanned(input, "unexpected receiver"));
        };
        let Pat::Ident(pat) = &*typed.pat else {
            return Err(syn::Error::new_spanned(
                &typed.pat,
                "RPC arguments must be plain names (`name: Type`), not patterns",
            ));
        };
        // `mut name` too: rustc refuses patterns in methods without a body, and the trait
        // the macro emits has none.
        if pat.by_ref.is_some() || pat.mutability.is_some() || pat.subpat.is_some() {
            return Err(syn::Error::new_spanned(
                &typed.pat,
                "RPC arguments must be plain names (`name: Type`), not patterns",
            ));
        }
        let mapping = types::map(&typed.ty)?;
        args.push(Arg {
            ident: pat.ident.clone(),
            ty: (*typed.ty).clone(),
            mapping,
        });
    }
    let output = output(&sig.output)?;
    if signal.is_some() && !matches!(output, Output::Unit) {
        return Err(syn::Error::new_spanned(
            &sig.output,
            "a #[signal] is one-way and returns nothing",
        ));
    }
    Ok(Method {
        item: f.clone(),
        args,
        output,
        signal,
    })
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

fn output(ret: &ReturnType) -> syn::Result<Output> {
    let ReturnType::Type(_, ty) = ret else {
        return Ok(Output::Unit);
    };
    if is_unit(ty) {
        return Ok(Output::Unit);
    }
    if let Type::Path(path) = &**ty {
        if let Some(last) = path.path.segments.last() {
            if last.ident == "Result" {
                let syn::PathArguments::AngleBracketed(angle) = &last.arguments else {
                    return Err(syn::Error::new_spanned(
                        ty,
                        "write the error type out: `Result<T, E>`",
                    ));
                };
                let tys: Vec<&Type> = angle
                    .args
                    .iter()
                    .filter_map(|a| match a {
                        syn::GenericArgument::Type(t) => Some(t),
                        _ => None,
                    })
                    .collect();
                let [ok, err] = tys.as_slice() else {
                    return Err(syn::Error::new_spanned(
                        ty,
                        "write the error type out: `Result<T, E>`",
                    ));
                };
                let ok = if is_unit(ok) {
                    None
                } else {
                    Some(((*ok).clone(), types::map(ok)?))
                };
                return Ok(Output::Result(ok, (*err).clone(), types::map(err)?));
            }
        }
    }
    Ok(Output::Value((**ty).clone(), types::map(ty)?))
}

/// The options of a `#[signal(..)]` attribute.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SignalAttr {
    /// `ttl = "30s"`: how long the signal may wait for the peer.
    pub(crate) ttl: Option<Duration>,
    /// `persistent`: the signal is stored durably until delivered.
    pub(crate) persistent: bool,
}

/// Removes `#[signal]` / `#[signal(ttl = "..", persistent)]` from the method and returns
/// its options.
fn take_signal(f: &mut TraitItemFn) -> syn::Result<Option<SignalAttr>> {
    let mut found = None;
    let mut result = Ok(());
    f.attrs.retain(|attr| {
        if !attr.path().is_ident("signal") {
            return true;
        }
        let mut options = SignalAttr::default();
        if let syn::Meta::List(_) = &attr.meta {
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("ttl") {
                    let lit: syn::LitStr = meta.value()?.parse()?;
                    options.ttl = Some(duration(&lit)?);
                    Ok(())
                } else if meta.path.is_ident("persistent") {
                    if meta.input.peek(syn::Token![=]) {
                        return Err(
                            meta.error("`persistent` takes no value: `#[signal(persistent)]`")
                        );
                    }
                    options.persistent = true;
                    Ok(())
                } else {
                    Err(meta.error(
                        "unknown #[signal] option; expected `ttl = \"30s\"` or `persistent`",
                    ))
                }
            });
            if let Err(e) = parsed {
                result = Err(e);
            }
        }
        found = Some(options);
        false
    });
    result.map(|()| found)
}

/// Parses `"500ms"`, `"30s"`, `"5m"`, `"1h"`.
fn duration(lit: &syn::LitStr) -> syn::Result<Duration> {
    let text = lit.value();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || {
        syn::Error::new(
            lit.span(),
            "expected a duration such as \"500ms\", \"30s\", \"5m\" or \"1h\"",
        )
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    let millis = match unit {
        "ms" => Some(number),
        "s" => number.checked_mul(1000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => None,
    }
    .ok_or_else(bad)?;
    Ok(Duration::from_millis(millis))
}

/// Span of a method for generated items that have no better place.
pub(crate) fn span_of(m: &Method) -> proc_macro2::Span {
    m.item.sig.ident.span()
}
