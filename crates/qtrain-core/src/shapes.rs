//! The shape rule of every op, in one place. Each backend calls the rule of an op before it
//! touches memory, so an op rejects the same operands with the same message on every device,
//! and a backend cannot forget a check the other makes. Each rule returns the sizes the kernels
//! need.
//!
//! This module must not compute anything but sizes, and must not know about devices, dtypes or
//! tensors: it sees shapes (`&[usize]`), ids and targets.

use crate::error::{CoreError, Result};
use crate::{ensure_shape, AttentionMask};

/// Rows (product of all but the last dimension) and the last dimension: how every row-wise op
/// (linear, RMSNorm, the LM head) views its input. A scalar shape `[]` is one row of one.
pub fn rows_cols(shape: &[usize]) -> (usize, usize) {
    let cols = *shape.last().unwrap_or(&1);
    let rows = shape.iter().product::<usize>().checked_div(cols).unwrap_or(0);
    (rows, cols)
}

/// [`crate::Backend::reshape`]: the element count is kept.
pub fn check_reshape(from: &[usize], to: &[usize]) -> Result<()> {
    let n: usize = to.iter().product();
    ensure_shape!(n == from.iter().product::<usize>(), "reshape", "{from:?} → {to:?}");
    Ok(())
}

/// [`crate::Backend::write_seq`]: `src [B, T, …]` into `dst [B, cap, …]` at position `at`.
/// Returns `(B, cap, T, inner)` with `inner` the product of the trailing dimensions.
pub fn check_write_seq(dst: &[usize], src: &[usize], at: usize) -> Result<(usize, usize, usize, usize)> {
    ensure_shape!(
        dst.len() >= 2 && src.len() == dst.len() && dst[0] == src[0] && dst[2..] == src[2..],
        "write_seq",
        "dst {dst:?}, src {src:?}"
    );
    let (b, cap, t) = (dst[0], dst[1], src[1]);
    ensure_shape!(at.checked_add(t).is_some_and(|end| end <= cap), "write_seq", "writing {t} positions at {at} overflows capacity {cap}");
    Ok((b, cap, t, dst[2..].iter().product()))
}

/// Element-wise ops over two operands of one shape (`add`, `mul`).
pub fn check_same_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<()> {
    ensure_shape!(a == b, op, "{a:?} vs {b:?}");
    Ok(())
}

/// [`crate::Backend::add_scaled_assign`]: equal element counts (shapes may differ).
pub fn check_same_count(op: &'static str, acc: &[usize], x: &[usize]) -> Result<()> {
    ensure_shape!(acc.iter().product::<usize>() == x.iter().product::<usize>(), op, "{acc:?} vs {x:?}");
    Ok(())
}

/// Sizes of a linear layer's call: `rows` inputs of `d_in` against a `[d_out, d_in]` weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearDims {
    pub rows: usize,
    pub d_in: usize,
    pub d_out: usize,
}

/// [`crate::Backend::linear`]: x `[…, d_in]` against w `[d_out, d_in]`, a bias of `d_out`, and
/// LoRA `A [r, d_in]`, `B [d_out, r]` when given (as `(A, B)` shapes).
pub fn check_linear_shapes(
    op: &'static str,
    x: &[usize],
    w: &[usize],
    bias: Option<&[usize]>,
    lora: Option<(&[usize], &[usize])>,
) -> Result<LinearDims> {
    let (rows, d_in) = rows_cols(x);
    ensure_shape!(w.len() == 2 && w[1] == d_in, op, "x {x:?} against weight {w:?}");
    let d_out = w[0];
    if let Some(bias) = bias {
        ensure_shape!(bias.iter().product::<usize>() == d_out, op, "bias {bias:?} for {d_out} outputs");
    }
    if let Some((a, b)) = lora {
        let r = a.first().copied().unwrap_or(0);
        ensure_shape!(a == [r, d_in] && b == [d_out, r], op, "LoRA A {a:?} / B {b:?} do not fit weight {w:?}");
    }
    Ok(LinearDims { rows, d_in, d_out })
}

/// Dropout masks are drawn per row from a Philox counter of (row, column) as u32s
/// ([`crate::philox`]), so both must fit in 32 bits.
pub fn check_dropout_rows(op: &'static str, rows: usize, cols: usize) -> Result<()> {
    ensure_shape!(rows <= u32::MAX as usize && cols <= u32::MAX as usize, op, "dropout over {rows} × {cols} elements");
    Ok(())
}

/// Gradient buffers a backward op accumulates into, each with the shape it must have.
#[derive(Clone, Copy, Debug, Default)]
pub struct GradShapes<'a> {
    pub weight: Option<&'a [usize]>,
    pub bias: Option<&'a [usize]>,
    pub lora_a: Option<&'a [usize]>,
    pub lora_b: Option<&'a [usize]>,
}

/// A gradient buffer is shaped like its parameter.
pub fn check_grad(op: &'static str, what: &str, got: &[usize], want: &[usize]) -> Result<()> {
    ensure_shape!(got == want, op, "{what} gradient buffer {got:?}, expected {want:?}");
    Ok(())
}

/// [`crate::Backend::linear_backward`]: the forward's rule, `dy` of `rows × d_out`, and every
/// gradient buffer shaped like its parameter (LoRA buffers only matter when LoRA is given).
pub fn check_linear_backward_shapes(
    x: &[usize],
    w: &[usize],
    lora: Option<(&[usize], &[usize])>,
    dy: &[usize],
    grads: GradShapes<'_>,
) -> Result<LinearDims> {
    let op = "linear_backward";
    let dims = check_linear_shapes(op, x, w, None, lora)?;
    let (rows, d_out) = (dims.rows, dims.d_out);
    ensure_shape!(dy.iter().product::<usize>() == rows * d_out, op, "dy {dy:?} for {rows} rows of {d_out}");
    if let Some(g) = grads.weight {
        check_grad(op, "weight", g, w)?;
    }
    if let Some(g) = grads.bias {
        check_grad(op, "bias", g, &[d_out])?;
    }
    if let Some((a, b)) = lora {
        if let Some(g) = grads.lora_a {
            check_grad(op, "lora_A", g, a)?;
        }
        if let Some(g) = grads.lora_b {
            check_grad(op, "lora_B", g, b)?;
        }
    }
    Ok(dims)
}

/// A `[V, C]` table looked up by `ids` (embedding and its backward): every id below V.
/// Returns `(V, C)`.
pub fn check_table_ids(op: &'static str, what: &str, table: &[usize], ids: &[u32]) -> Result<(usize, usize)> {
    ensure_shape!(table.len() == 2, op, "{what} must be [V, C], got {table:?}");
    let (v, c) = (table[0], table[1]);
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= v) {
        return Err(CoreError::Index { op, index: id as usize, size: v });
    }
    Ok((v, c))
}

/// [`crate::Backend::embedding_backward`]: `dy` holds one row of C per id. Returns `(V, C)`.
pub fn check_embedding_backward_shapes(grad_table: &[usize], ids: &[u32], dy: &[usize]) -> Result<(usize, usize)> {
    let op = "embedding_backward";
    let (v, c) = check_table_ids(op, "table gradient", grad_table, ids)?;
    ensure_shape!(dy.iter().product::<usize>() == ids.len() * c, op, "dy {dy:?} for {} ids of width {c}", ids.len());
    Ok((v, c))
}

/// [`crate::Backend::rms_norm`]: a weight of one value per column. Returns `(rows, C)`.
pub fn check_rms_norm_shapes(x: &[usize], w: &[usize]) -> Result<(usize, usize)> {
    let (rows, c) = rows_cols(x);
    ensure_shape!(w.iter().product::<usize>() == c, "rms_norm", "weight {w:?} for rows of {c}");
    Ok((rows, c))
}

/// [`crate::Backend::rms_norm_backward`]: the forward's rule, `dy` shaped like x, and a weight
/// gradient of C. Returns `(rows, C)`.
pub fn check_rms_norm_backward_shapes(x: &[usize], w: &[usize], dy: &[usize], grad_w: Option<&[usize]>) -> Result<(usize, usize)> {
    let op = "rms_norm_backward";
    let (rows, c) = rows_cols(x);
    ensure_shape!(w.iter().product::<usize>() == c && dy == x, op, "x {x:?}, w {w:?}, dy {dy:?}");
    if let Some(g) = grad_w {
        check_grad(op, "weight", g, &[c])?;
    }
    Ok((rows, c))
}

/// [`crate::Backend::swiglu`] (`dy` None) and its backward: gate, up (and dy) of one shape.
pub fn check_swiglu_shapes(op: &'static str, gate: &[usize], up: &[usize], dy: Option<&[usize]>) -> Result<()> {
    ensure_shape!(
        gate == up && dy.is_none_or(|dy| dy == gate),
        op,
        "gate {gate:?}, up {up:?}{}",
        dy.map_or(String::new(), |dy| format!(", dy {dy:?}"))
    );
    Ok(())
}

/// [`crate::Backend::lm_head_cross_entropy`]: hidden `[N, C]` against a head `[V, C]`, one
/// target per row, each -100 (ignored) or a token below V, and a head gradient shaped like the
/// head. Returns `(N, C, V)`.
pub fn check_cross_entropy_shapes(
    hidden: &[usize],
    w: &[usize],
    targets: &[i32],
    grad_w: Option<&[usize]>,
) -> Result<(usize, usize, usize)> {
    let op = "lm_head_cross_entropy";
    let (n, c) = rows_cols(hidden);
    ensure_shape!(w.len() == 2 && w[1] == c, op, "hidden {hidden:?} against head {w:?}");
    ensure_shape!(targets.len() == n, op, "{} targets for {n} rows", targets.len());
    let vocab = w[0];
    if let Some(&bad) = targets.iter().find(|&&t| t != -100 && (t < 0 || t as usize >= vocab)) {
        return Err(CoreError::Index { op, index: bad.max(0) as usize, size: vocab });
    }
    if let Some(g) = grad_w {
        check_grad(op, "head", g, w)?;
    }
    Ok((n, c, vocab))
}

/// [`crate::Backend::adamw_step`]: gradient and both moments hold as many values as the
/// parameter. Returns that count.
pub fn check_adamw_shapes(param: &[usize], grad: &[usize], exp_avg: &[usize], exp_avg_sq: &[usize]) -> Result<usize> {
    let count = |s: &[usize]| s.iter().product::<usize>();
    let n = count(param);
    ensure_shape!(
        count(grad) == n && count(exp_avg) == n && count(exp_avg_sq) == n,
        "adamw_step",
        "param {param:?}, grad {grad:?}, moments {exp_avg:?}/{exp_avg_sq:?}"
    );
    Ok(n)
}

/// The shape rule of [`crate::Backend::matmul`]: 2-D operands whose inner dimensions agree after the
/// transposes. Returns `(m, k, n)` of `op(a) [m, k] · op(b) [k, n]`.
pub fn check_matmul_shapes(a: &[usize], b: &[usize], trans_a: bool, trans_b: bool) -> Result<(usize, usize, usize)> {
    ensure_shape!(a.len() == 2 && b.len() == 2, "matmul", "2-D operands expected, got {a:?} and {b:?}");
    let (m, k) = if trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
    let (k2, n) = if trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
    let t = |flag: bool| if flag { "ᵀ" } else { "" };
    ensure_shape!(k == k2, "matmul", "inner dimensions differ: {a:?}{} · {b:?}{}", t(trans_a), t(trans_b));
    Ok((m, k, n))
}

/// The shape rule of [`crate::Backend::rope`] and its backward: x `[N, H, D]` with D even, cos/sin
/// tables `[P, D/2]`, one position per row and every position inside the tables.
/// Returns `(N, H, D)`.
pub fn check_rope_shapes(op: &'static str, x: &[usize], cos: &[usize], sin: &[usize], positions: &[u32]) -> Result<(usize, usize, usize)> {
    ensure_shape!(x.len() == 3, op, "x must be [N, H, D], got {x:?}");
    let (n, h, d) = (x[0], x[1], x[2]);
    ensure_shape!(d % 2 == 0 && cos.len() == 2 && cos[1] == d / 2 && sin == cos, op, "tables {cos:?}/{sin:?} for head dim {d}");
    ensure_shape!(positions.len() == n, op, "{} positions for {n} rows", positions.len());
    if let Some(&p) = positions.iter().find(|&&p| p as usize >= cos[0]) {
        return Err(CoreError::Index { op, index: p as usize, size: cos[0] });
    }
    Ok((n, h, d))
}

/// Sizes of an attention call, after [`check_attention_shapes`] accepted its operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    pub batch: usize,
    /// query length T
    pub q_len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// rows of k/v allocated (the KV-cache capacity); the first `mask.kv_len` are used
    pub kv_capacity: usize,
}

/// The shape rules every backend's [`crate::Backend::attention`] enforces, in one place:
/// q `[B, T, H, D]`, k = v `[B, S_cap, KV, D]` with H a multiple of KV, and a mask that fits.
pub fn check_attention_shapes(op: &'static str, q: &[usize], k: &[usize], v: &[usize], mask: &AttentionMask) -> Result<AttentionDims> {
    ensure_shape!(q.len() == 4 && k.len() == 4 && k == v, op, "q {q:?}, k {k:?}, v {v:?}");
    let dims = AttentionDims { batch: q[0], q_len: q[1], heads: q[2], kv_heads: k[2], head_dim: q[3], kv_capacity: k[1] };
    let (b, t) = (dims.batch, dims.q_len);
    ensure_shape!(
        k[0] == b && k[3] == dims.head_dim && dims.kv_heads > 0 && dims.heads.is_multiple_of(dims.kv_heads),
        op,
        "q {q:?} against k/v {k:?}"
    );
    ensure_shape!(
        mask.batch == b && mask.q_len == t && mask.kv_len <= dims.kv_capacity,
        op,
        "mask (batch {}, q_len {}, kv_len {}) for q {q:?}, cache {}",
        mask.batch,
        mask.q_len,
        mask.kv_len,
        dims.kv_capacity
    );
    ensure_shape!(mask.q_offset + t <= mask.kv_len, op, "queries end at {} past kv_len {}", mask.q_offset + t, mask.kv_len);
    for (name, len) in [("key_valid", mask.key_valid.as_ref().map(Vec::len)), ("segments", mask.segments.as_ref().map(Vec::len))] {
        if let Some(len) = len {
            ensure_shape!(len == b * mask.kv_len, op, "{name} has {len} entries, expected {}", b * mask.kv_len);
        }
    }
    Ok(dims)
}

/// [`check_attention_shapes`] for [`crate::Backend::attention_backward`]: no cache (k/v hold exactly
/// `mask.kv_len` rows), and `out`/`dout` shaped like q, `lse` `[B, T, H]`.
pub fn check_attention_backward_shapes(
    q: &[usize],
    k: &[usize],
    v: &[usize],
    out: &[usize],
    lse: &[usize],
    dout: &[usize],
    mask: &AttentionMask,
) -> Result<AttentionDims> {
    let op = "attention_backward";
    let dims = check_attention_shapes(op, q, k, v, mask)?;
    ensure_shape!(
        mask.kv_len == dims.kv_capacity,
        op,
        "k/v hold {} rows but kv_len is {} (backward takes no cache)",
        dims.kv_capacity,
        mask.kv_len
    );
    ensure_shape!(
        out == q && dout == q && lse == [dims.batch, dims.q_len, dims.heads],
        op,
        "out {out:?}, dout {dout:?}, lse {lse:?} for q {q:?}"
    );
    Ok(dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The detail of a shape error (panics on success or another error kind).
    fn detail<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(CoreError::Shape { detail, .. }) => detail,
            other => panic!("expected a shape error, got {other:?}"),
        }
    }

    #[test]
    fn rows_cols_views_every_leading_dimension_as_rows() {
        assert_eq!(rows_cols(&[2, 3, 4]), (6, 4));
        assert_eq!(rows_cols(&[5]), (1, 5));
        assert_eq!(rows_cols(&[0, 4]), (0, 4));
        assert_eq!(rows_cols(&[3, 0]), (0, 0));
        assert_eq!(rows_cols(&[]), (1, 1));
    }

    #[test]
    fn linear_rule_checks_weight_bias_and_lora() {
        let dims = check_linear_shapes("linear", &[2, 3, 8], &[5, 8], Some(&[5]), Some((&[4, 8], &[5, 4]))).unwrap();
        assert_eq!(dims, LinearDims { rows: 6, d_in: 8, d_out: 5 });
        assert!(detail(check_linear_shapes("linear", &[2, 7], &[5, 8], None, None)).contains("against weight"));
        assert!(detail(check_linear_shapes("linear", &[2, 8], &[5, 8], Some(&[4]), None)).contains("bias [4] for 5 outputs"));
        assert!(detail(check_linear_shapes("linear", &[2, 8], &[5, 8], None, Some((&[4, 8], &[5, 3])))).contains("LoRA A"));
    }

    #[test]
    fn linear_backward_rule_checks_dy_and_every_gradient_buffer() {
        let (x, w, dy) = ([3, 8], [5, 8], [3, 5]);
        let lora = Some((&[2usize, 8][..], &[5usize, 2][..]));
        let ok = GradShapes { weight: Some(&w), bias: Some(&[5]), lora_a: Some(&[2, 8]), lora_b: Some(&[5, 2]) };
        check_linear_backward_shapes(&x, &w, lora, &dy, ok).unwrap();
        assert!(detail(check_linear_backward_shapes(&x, &w, lora, &[3, 4], ok)).starts_with("dy [3, 4]"));
        for (what, grads) in [
            ("weight", GradShapes { weight: Some(&[8, 5]), ..ok }),
            ("bias", GradShapes { bias: Some(&[8]), ..ok }),
            ("lora_A", GradShapes { lora_a: Some(&[8, 2]), ..ok }),
            ("lora_B", GradShapes { lora_b: Some(&[2, 5]), ..ok }),
        ] {
            assert!(detail(check_linear_backward_shapes(&x, &w, lora, &dy, grads)).starts_with(what), "{what}");
        }
        // Without LoRA its gradient buffers play no part (as the forward ignores them).
        check_linear_backward_shapes(&x, &w, None, &dy, GradShapes { lora_a: Some(&[9]), ..ok }).unwrap();
    }

    #[test]
    fn table_and_cross_entropy_rules_refuse_out_of_range_ids() {
        assert_eq!(check_table_ids("embedding", "table", &[10, 4], &[0, 9]).unwrap(), (10, 4));
        let err = check_table_ids("embedding", "table", &[10, 4], &[3, 10]).unwrap_err();
        assert!(matches!(err, CoreError::Index { index: 10, size: 10, .. }), "{err:?}");
        assert!(detail(check_embedding_backward_shapes(&[10, 4], &[1, 2], &[2, 3])).contains("for 2 ids of width 4"));

        assert_eq!(check_cross_entropy_shapes(&[3, 4], &[7, 4], &[0, -100, 6], Some(&[7, 4])).unwrap(), (3, 4, 7));
        let err = check_cross_entropy_shapes(&[3, 4], &[7, 4], &[0, -100, 7], None).unwrap_err();
        assert!(matches!(err, CoreError::Index { index: 7, size: 7, .. }), "{err:?}");
        assert!(matches!(check_cross_entropy_shapes(&[1, 4], &[7, 4], &[-5], None), Err(CoreError::Index { index: 0, .. })));
        assert!(detail(check_cross_entropy_shapes(&[3, 4], &[7, 4], &[0, 1], None)).contains("2 targets for 3 rows"));
        assert!(detail(check_cross_entropy_shapes(&[3, 4], &[7, 4], &[0, 1, 2], Some(&[4, 7]))).starts_with("head gradient"));
    }

    #[test]
    fn row_and_element_wise_rules() {
        assert_eq!(check_rms_norm_shapes(&[2, 3, 4], &[4]).unwrap(), (6, 4));
        assert!(detail(check_rms_norm_shapes(&[2, 4], &[3])).contains("weight [3] for rows of 4"));
        assert!(detail(check_rms_norm_backward_shapes(&[2, 4], &[4], &[4, 2], None)).contains("dy [4, 2]"));
        assert!(detail(check_rms_norm_backward_shapes(&[2, 4], &[4], &[2, 4], Some(&[2]))).starts_with("weight gradient"));
        check_swiglu_shapes("swiglu", &[2, 6], &[2, 6], Some(&[2, 6])).unwrap();
        assert_eq!(detail(check_swiglu_shapes("swiglu", &[2, 6], &[2, 5], None)), "gate [2, 6], up [2, 5]");
        assert!(detail(check_swiglu_shapes("swiglu_backward", &[2, 6], &[2, 6], Some(&[6, 2]))).ends_with("dy [6, 2]"));
        check_same_shape("add", &[2, 3], &[2, 3]).unwrap();
        assert!(check_same_shape("add", &[2, 3], &[3, 2]).is_err());
        check_same_count("add_scaled_assign", &[2, 3], &[6]).unwrap();
        assert!(check_same_count("add_scaled_assign", &[2, 3], &[5]).is_err());
        check_reshape(&[2, 3], &[3, 2]).unwrap();
        assert!(detail(check_reshape(&[2, 3], &[4, 2])).contains("→"));
        assert_eq!(check_adamw_shapes(&[2, 3], &[6], &[2, 3], &[3, 2]).unwrap(), 6);
        assert!(detail(check_adamw_shapes(&[2, 3], &[6], &[5], &[2, 3])).contains("moments [5]/[2, 3]"));
    }

    #[test]
    fn write_seq_rule_refuses_overflow_without_overflowing() {
        assert_eq!(check_write_seq(&[2, 8, 3, 4], &[2, 5, 3, 4], 3).unwrap(), (2, 8, 5, 12));
        assert!(detail(check_write_seq(&[2, 8, 3, 4], &[2, 5, 3, 4], 4)).contains("overflows capacity 8"));
        assert!(detail(check_write_seq(&[2, 8, 3, 4], &[2, 1, 3, 4], usize::MAX)).contains("overflows"));
        assert!(detail(check_write_seq(&[2, 8, 3, 4], &[1, 5, 3, 4], 0)).starts_with("dst"));
        assert!(detail(check_dropout_rows("linear", 1 << 33, 4)).contains("dropout over"));
    }
}
