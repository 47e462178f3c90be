//! Weight files: PyTorch `.pt` (the zip + pickle layout of `torch.save`) and
//! safetensors.
//!
//! Why not tch's own savers: every `.pt` that tch writes (`Tensor::save`,
//! `save_multi`, `VarStore::save`) is a TorchScript archive, which
//! `torch.load` rejects under its default `weights_only=True` since PyTorch
//! 2.6. So this module writes the zip archive itself: `archive/data.pkl`
//! contains a protocol-2 pickle of a dict `{name: tensor}` whose tensors are
//! `torch._utils._rebuild_tensor_v2` calls on persistent storages, and
//! `archive/data/<i>` contains each storage's raw little-endian bytes, stored
//! uncompressed and 64-byte aligned like `torch.save` does. Doing it in Rust
//! keeps the build free of a C++ shim and lets every byte be tested here.
//!
//! Reading accepts such files from binadd or from Python's
//! `torch.save({name: tensor})` (plain dicts and `OrderedDict` state dicts),
//! by interpreting the subset of pickle opcodes that `torch.save` emits.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tch::{Kind, Tensor};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};


/// File format of saved weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// PyTorch zip + pickle, read by `torch.load(path)`.
    Pt,
    /// safetensors, read by `safetensors.torch.load_file(path)`.
    Safetensors,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Pt => "pt",
            Format::Safetensors => "safetensors",
        }
    }
}

const ARCHIVE: &str = "archive";
const ALIGNMENT: u16 = 64;

/// Saves named tensors in `format`, atomically.
pub fn save(path: &Path, tensors: &[(String, Tensor)], format: Format) -> Result<()> {
    match format {
        Format::Pt => save_pt(path, tensors),
        Format::Safetensors => save_safetensors(path, tensors),
    }
}

/// Loads named tensors from a `.pt` or safetensors file, detected by its content.
pub fn load(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .with_context(|| format!("weights file '{shown}' not found; pass the weights.pt of a run directory"))?;
    if meta.is_dir() {
        bail!("'{shown}' is a directory; pass the weights file inside it, e.g. '{shown}/weights.pt'");
    }
    if meta.len() == 0 {
        bail!("weights file '{shown}' is empty; it was not written completely, so train again or pick another file");
    }
    let mut head = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("cannot read '{shown}'"))?;
    if head == *b"PK\x03\x04" {
        load_pt(path)
    } else {
        load_safetensors(path).with_context(|| {
            format!("'{shown}' is neither a PyTorch zip file nor a safetensors file")
        })
    }
}

fn tensor_bytes(tensor: &Tensor) -> Result<(Vec<u8>, Vec<i64>)> {
    let tensor = tensor.detach().to_device(tch::Device::Cpu).contiguous();
    if tensor.kind() != Kind::Double {
        bail!("only float64 tensors are saved, got {:?}", tensor.kind());
    }
    let values = Vec::<f64>::try_from(tensor.view([-1]))?;
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok((bytes, tensor.size()))
}

// ---- .pt writing ------------------------------------------------------------

/// Saves float64 tensors as a PyTorch zip file that `torch.load` reads.
pub fn save_pt(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut storages = Vec::with_capacity(tensors.len());
    let mut entries = Vec::with_capacity(tensors.len());
    for (index, (name, tensor)) in tensors.iter().enumerate() {
        let (bytes, shape) = tensor_bytes(tensor).with_context(|| format!("tensor '{name}'"))?;
        entries.push((name.clone(), index, shape));
        storages.push(bytes);
    }
    let pickle = pickle_state_dict(&entries);

    // Built in memory, so a failed write cannot leave the zip writer half done.
    let mut zip = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let archive = (|| -> Result<Vec<u8>> {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .with_alignment(ALIGNMENT)
            .large_file(storages.iter().map(Vec::len).sum::<usize>() > u32::MAX as usize / 2);
        zip.start_file(format!("{ARCHIVE}/data.pkl"), options)?;
        zip.write_all(&pickle)?;
        zip.start_file(format!("{ARCHIVE}/byteorder"), options)?;
        zip.write_all(b"little")?;
        for (index, bytes) in storages.iter().enumerate() {
            zip.start_file(format!("{ARCHIVE}/data/{index}"), options)?;
            zip.write_all(bytes)?;
        }
        zip.start_file(format!("{ARCHIVE}/version"), options)?;
        zip.write_all(b"3\n")?;
        Ok(zip.finish()?.into_inner())
    })()?;
    crate::fsutil::write_bytes_atomic(path, &archive)
}

/// Pickle (protocol 2) of `{name: _rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())}`.
fn pickle_state_dict(entries: &[(String, usize, Vec<i64>)]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&[0x80, 2]); // PROTO 2
    p.push(b'}'); // EMPTY_DICT
    p.push(b'('); // MARK
    for (name, key, shape) in entries {
        let numel: i64 = shape.iter().product();
        push_str(&mut p, name);
        push_global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.push(b'('); // MARK: arguments
        // Persistent id ('storage', torch.DoubleStorage, key, 'cpu', numel).
        p.push(b'(');
        push_str(&mut p, "storage");
        push_global(&mut p, "torch", "DoubleStorage");
        push_str(&mut p, &key.to_string());
        push_str(&mut p, "cpu");
        push_int(&mut p, numel);
        p.push(b't'); // TUPLE
        p.push(b'Q'); // BINPERSID
        push_int(&mut p, 0); // storage offset
        push_tuple(&mut p, shape);
        push_tuple(&mut p, &contiguous_strides(shape));
        p.push(0x89); // NEWFALSE: requires_grad
        push_global(&mut p, "collections", "OrderedDict");
        p.push(b')'); // EMPTY_TUPLE
        p.push(b'R'); // REDUCE: OrderedDict()
        p.push(b't'); // TUPLE of the arguments
        p.push(b'R'); // REDUCE: _rebuild_tensor_v2(...)
    }
    p.push(b'u'); // SETITEMS
    p.push(b'.'); // STOP
    p
}

fn push_str(p: &mut Vec<u8>, s: &str) {
    p.push(b'X'); // BINUNICODE
    p.extend_from_slice(&(s.len() as u32).to_le_bytes());
    p.extend_from_slice(s.as_bytes());
}

fn push_global(p: &mut Vec<u8>, module: &str, name: &str) {
    p.push(b'c');
    p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
}

fn push_int(p: &mut Vec<u8>, v: i64) {
    if (0..256).contains(&v) {
        p.push(b'K'); // BININT1
        p.push(v as u8);
    } else if i32::try_from(v).is_ok() {
        p.push(b'J'); // BININT
        p.extend_from_slice(&(v as i32).to_le_bytes());
    } else {
        p.push(0x8a); // LONG1 with 8 bytes
        p.push(8);
        p.extend_from_slice(&v.to_le_bytes());
    }
}

fn push_tuple(p: &mut Vec<u8>, values: &[i64]) {
    if values.is_empty() {
        p.push(b')');
        return;
    }
    p.push(b'(');
    for &v in values {
        push_int(p, v);
    }
    p.push(b't');
}

fn contiguous_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].max(1);
    }
    strides
}

// ---- .pt reading ------------------------------------------------------------

/// Values of the pickle subset that `torch.save` emits.
#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float,
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Storage { dtype: String, key: String, numel: i64 },
    Tensor { storage: Box<Value>, offset: i64, size: Vec<i64>, stride: Vec<i64> },
    Mark,
    Opaque(String),
}

impl Value {
    fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    fn as_ints(&self) -> Option<Vec<i64>> {
        match self {
            Value::Tuple(items) | Value::List(items) => items.iter().map(Value::as_int).collect(),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Value::Tensor { .. } => "a tensor".into(),
            Value::Dict(_) => "a dict".into(),
            Value::List(_) => "a list".into(),
            Value::Tuple(_) => "a tuple".into(),
            Value::Str(s) => format!("the string {s:?}"),
            Value::Int(_) | Value::Float | Value::Bool(_) => "a number".into(),
            Value::None => "None".into(),
            Value::Opaque(what) => format!("an object of {what}"),
            other => format!("{other:?}"),
        }
    }
}

/// Interprets a pickle stream. Persistent ids become `Value::Storage`.
fn unpickle(bytes: &[u8]) -> Result<Value> {
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: BTreeMap<u32, Value> = BTreeMap::new();
    let mut pos = 0usize;

    let take = |pos: &mut usize, n: usize| -> Result<&[u8]> {
        let end = pos.checked_add(n).filter(|&e| e <= bytes.len()).ok_or_else(|| anyhow!("pickle ends early at byte {}", *pos))?;
        let slice = &bytes[*pos..end];
        *pos = end;
        Ok(slice)
    };
    fn pop(stack: &mut Vec<Value>) -> Result<Value> {
        stack.pop().ok_or_else(|| anyhow!("pickle stack underflow"))
    }
    fn pop_mark(stack: &mut Vec<Value>) -> Result<Vec<Value>> {
        let mark = stack.iter().rposition(|v| matches!(v, Value::Mark)).ok_or_else(|| anyhow!("pickle MARK missing"))?;
        let items = stack.split_off(mark + 1);
        stack.pop();
        Ok(items)
    }
    fn read_line(bytes: &[u8], pos: &mut usize) -> Result<String> {
        let rest = &bytes[*pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| anyhow!("pickle line not terminated"))?;
        *pos += end + 1;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    }

    loop {
        let at = pos;
        let op = *take(&mut pos, 1)?.first().unwrap();
        match op {
            0x80 => {
                take(&mut pos, 1)?;
            }
            0x95 => {
                take(&mut pos, 8)?;
            }
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'(' => stack.push(Value::Mark),
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    bail!("pickle stack underflow at byte {at}");
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'X' => {
                let len = u32::from_le_bytes(take(&mut pos, 4)?.try_into()?) as usize;
                stack.push(Value::Str(String::from_utf8_lossy(take(&mut pos, len)?).into_owned()));
            }
            0x8c => {
                let len = take(&mut pos, 1)?[0] as usize;
                stack.push(Value::Str(String::from_utf8_lossy(take(&mut pos, len)?).into_owned()));
            }
            0x8d => {
                let len = u64::from_le_bytes(take(&mut pos, 8)?.try_into()?) as usize;
                stack.push(Value::Str(String::from_utf8_lossy(take(&mut pos, len)?).into_owned()));
            }
            b'c' => {
                let module = read_line(bytes, &mut pos)?;
                let name = read_line(bytes, &mut pos)?;
                stack.push(Value::Global(module, name));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(m, n)),
                    _ => bail!("pickle STACK_GLOBAL without strings at byte {at}"),
                }
            }
            b'q' => {
                let key = take(&mut pos, 1)?[0] as u32;
                memo.insert(key, stack.last().cloned().ok_or_else(|| anyhow!("pickle BINPUT on empty stack"))?);
            }
            b'r' => {
                let key = u32::from_le_bytes(take(&mut pos, 4)?.try_into()?);
                memo.insert(key, stack.last().cloned().ok_or_else(|| anyhow!("pickle LONG_BINPUT on empty stack"))?);
            }
            0x94 => {
                let key = memo.len() as u32;
                memo.insert(key, stack.last().cloned().ok_or_else(|| anyhow!("pickle MEMOIZE on empty stack"))?);
            }
            b'h' => {
                let key = take(&mut pos, 1)?[0] as u32;
                stack.push(memo.get(&key).cloned().ok_or_else(|| anyhow!("pickle memo {key} missing"))?);
            }
            b'j' => {
                let key = u32::from_le_bytes(take(&mut pos, 4)?.try_into()?);
                stack.push(memo.get(&key).cloned().ok_or_else(|| anyhow!("pickle memo {key} missing"))?);
            }
            b'K' => stack.push(Value::Int(take(&mut pos, 1)?[0] as i64)),
            b'M' => stack.push(Value::Int(u16::from_le_bytes(take(&mut pos, 2)?.try_into()?) as i64)),
            b'J' => stack.push(Value::Int(i32::from_le_bytes(take(&mut pos, 4)?.try_into()?) as i64)),
            0x8a => {
                let len = take(&mut pos, 1)?[0] as usize;
                let raw = take(&mut pos, len)?;
                if len > 8 {
                    bail!("pickle integer of {len} bytes is too large");
                }
                let mut buf = if raw.last().is_some_and(|&b| b & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
                buf[..len].copy_from_slice(raw);
                stack.push(Value::Int(i64::from_le_bytes(buf)));
            }
            b'G' => {
                take(&mut pos, 8)?;
                stack.push(Value::Float);
            }
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'N' => stack.push(Value::None),
            b'Q' => {
                let pid = pop(&mut stack)?;
                stack.push(storage_from_pid(pid)?);
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                stack.push(reduce(callable, args)?);
            }
            0x81 => {
                let _args = pop(&mut stack)?;
                let class = pop(&mut stack)?;
                stack.push(Value::Opaque(format!("{class:?}")));
            }
            b'b' => {
                // BUILD sets object state (e.g. a state dict's _metadata); tensors need none.
                pop(&mut stack)?;
            }
            b's' => {
                let value = pop(&mut stack)?;
                let key = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::Dict(items)) => items.push((key, value)),
                    _ => bail!("pickle SETITEM outside a dict at byte {at}"),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                let Some(Value::Dict(dict)) = stack.last_mut() else {
                    bail!("pickle SETITEMS outside a dict at byte {at}");
                };
                let mut iter = items.into_iter();
                while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
                    dict.push((k, v));
                }
            }
            b'a' => {
                let value = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(items)) => items.push(value),
                    _ => bail!("pickle APPEND outside a list at byte {at}"),
                }
            }
            b'e' => {
                let values = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(items)) => items.extend(values),
                    _ => bail!("pickle APPENDS outside a list at byte {at}"),
                }
            }
            b'.' => return pop(&mut stack),
            other => bail!("unsupported pickle opcode 0x{other:02x} at byte {at}"),
        }
    }
}

fn storage_from_pid(pid: Value) -> Result<Value> {
    let Value::Tuple(items) = pid else { bail!("persistent id is not a tuple") };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(_, dtype), Value::Str(key), _location, numel] if tag == "storage" => {
            Ok(Value::Storage {
                dtype: dtype.clone(),
                key: key.clone(),
                numel: numel.as_int().ok_or_else(|| anyhow!("storage size is not an integer"))?,
            })
        }
        _ => bail!("unsupported persistent id {items:?}"),
    }
}

fn reduce(callable: Value, args: Value) -> Result<Value> {
    let Value::Global(module, name) = &callable else {
        return Ok(Value::Opaque(format!("{callable:?}")));
    };
    let items = match &args {
        Value::Tuple(items) => items.as_slice(),
        _ => &[],
    };
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            if items.len() < 4 {
                bail!("_rebuild_tensor_v2 called with {} arguments", items.len());
            }
            Ok(Value::Tensor {
                storage: Box::new(items[0].clone()),
                offset: items[1].as_int().ok_or_else(|| anyhow!("tensor offset is not an integer"))?,
                size: items[2].as_ints().ok_or_else(|| anyhow!("tensor size is not a tuple of integers"))?,
                stride: items[3].as_ints().ok_or_else(|| anyhow!("tensor stride is not a tuple of integers"))?,
            })
        }
        ("collections", "OrderedDict") => Ok(Value::Dict(Vec::new())),
        _ => Ok(Value::Opaque(format!("{module}.{name}"))),
    }
}

/// Loads a `torch.save`d dict of tensors.
pub fn load_pt(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let shown = path.display();
    let file = File::open(path).with_context(|| format!("cannot open '{shown}'"))?;
    let mut zip = ZipArchive::new(file).map_err(|e| {
        anyhow!("'{shown}' is not a readable zip file ({e}); it may be truncated or corrupt, so save it again")
    })?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("'{shown}' is a zip file but not a PyTorch file: it has no <archive>/data.pkl"))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let read_entry = |zip: &mut ZipArchive<File>, name: &str| -> Result<Vec<u8>> {
        let mut entry = zip.by_name(name).with_context(|| format!("'{shown}' has no entry '{name}'"))?;
        let mut buf = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut buf)
            .with_context(|| format!("'{shown}': entry '{name}' is truncated or corrupt"))?;
        Ok(buf)
    };
    let pickle = read_entry(&mut zip, &pkl_name)?;
    let root = unpickle(&pickle).with_context(|| format!("'{shown}': cannot read {pkl_name}"))?;
    let Value::Dict(items) = root else {
        bail!("'{shown}' contains {}, not a dict of tensors; save a dict such as {{'w_h': tensor}}", root.describe());
    };

    let mut out = BTreeMap::new();
    for (key, value) in items {
        let Value::Str(name) = key else { bail!("'{shown}': a dict key is {}, not a string", key.describe()) };
        let Value::Tensor { storage, offset, size, stride } = value else {
            bail!("'{shown}': entry '{name}' is {}, not a tensor", value.describe());
        };
        let Value::Storage { dtype, key, numel } = *storage else { bail!("'{shown}': tensor '{name}' has no storage") };
        let kind = match dtype.as_str() {
            "DoubleStorage" => Kind::Double,
            "FloatStorage" => Kind::Float,
            other => bail!(
                "'{shown}': tensor '{name}' is stored as {other}, but binadd needs float64; \
                 convert it in Python with tensor.double() before saving"
            ),
        };
        let raw = read_entry(&mut zip, &format!("{prefix}data/{key}"))
            .with_context(|| format!("'{shown}': storage of tensor '{name}'"))?;
        let width = kind.elt_size_in_bytes();
        if raw.len() != numel as usize * width {
            bail!("'{shown}': storage of tensor '{name}' has {} bytes, expected {}", raw.len(), numel as usize * width);
        }
        let storage = match kind {
            Kind::Double => {
                let values: Vec<f64> = raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
                Tensor::from_slice(&values)
            }
            _ => {
                let values: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                Tensor::from_slice(&values)
            }
        };
        let needed = size.iter().zip(&stride).map(|(&s, &st)| (s - 1).max(0) * st).sum::<i64>() + offset + 1;
        if size.iter().product::<i64>() > 0 && needed > numel {
            bail!("'{shown}': tensor '{name}' of shape {size:?} reads past its storage of {numel} values");
        }
        let tensor = storage.as_strided(size.as_slice(), stride.as_slice(), Some(offset)).contiguous();
        out.insert(name, tensor);
    }
    Ok(out)
}

// ---- safetensors ------------------------------------------------------------

/// Saves float64 tensors as safetensors, atomically.
pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let (bytes, shape) = tensor_bytes(tensor).with_context(|| format!("tensor '{name}'"))?;
        owned.push((name.clone(), bytes, shape));
    }
    let views = owned
        .iter()
        .map(|(name, bytes, shape)| {
            let shape = shape.iter().map(|&d| d as usize).collect();
            Ok((name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F64, shape, bytes)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, &None)?;
    crate::fsutil::write_bytes_atomic(path, &bytes)
}

pub fn load_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let shown = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read '{shown}'"))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("'{shown}' is not a valid safetensors file: {e}"))?;
    let mut out = BTreeMap::new();
    for (name, view) in file.tensors() {
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let tensor = match view.dtype() {
            safetensors::Dtype::F64 => {
                let values: Vec<f64> =
                    view.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
                Tensor::from_slice(&values)
            }
            safetensors::Dtype::F32 => {
                let values: Vec<f32> =
                    view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                Tensor::from_slice(&values)
            }
            other => bail!("'{shown}': tensor '{name}' is {other:?}; binadd reads float64 tensors"),
        };
        out.insert(name, tensor.view(shape.as_slice()));
    }
    Ok(out)
}

/// Rejects float32 (or other) tensors where binadd needs float64, naming the
/// tensor and the fix. binadd does not convert silently: a float32 copy of
/// trained weights would not reproduce the run's numbers.
pub fn require_f64(values: &BTreeMap<String, Tensor>, source: &str) -> Result<()> {
    for (name, tensor) in values {
        if tensor.kind() != Kind::Double {
            bail!(
                "{source}: tensor '{name}' is {:?}, but binadd needs float64; \
                 convert it in Python with tensor.double() before saving",
                tensor.kind()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(String, Tensor)> {
        vec![
            ("w_h".to_string(), Tensor::from_slice(&[0.1f64, -2.5, 3.0, 1e-300, f64::MAX, -0.0]).view([2, 3])),
            ("b_f".to_string(), Tensor::from_slice(&[0.25f64]).view([1, 1])),
            ("y_t".to_string(), Tensor::arange(300, (Kind::Double, tch::Device::Cpu)).view([300, 1]) / 7.0),
            ("gru.weight_ih_l0".to_string(), Tensor::from_slice(&[1.5f64; 12]).view([6, 2])),
        ]
    }

    fn assert_same(loaded: &BTreeMap<String, Tensor>, saved: &[(String, Tensor)]) {
        assert_eq!(loaded.len(), saved.len());
        for (name, tensor) in saved {
            let got = &loaded[name];
            assert_eq!(got.size(), tensor.size(), "{name}");
            assert_eq!(got.kind(), Kind::Double, "{name}");
            let a = Vec::<f64>::try_from(got.view([-1])).unwrap();
            let b = Vec::<f64>::try_from(tensor.view([-1])).unwrap();
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} differs");
        }
    }

    #[test]
    fn pt_round_trip_is_bit_identical() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.pt");
        save_pt(&path, &sample()).unwrap();
        assert_same(&load(&path).unwrap(), &sample());
    }

    #[test]
    fn safetensors_round_trip_is_bit_identical() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        save_safetensors(&path, &sample()).unwrap();
        assert_same(&load(&path).unwrap(), &sample());
    }

    #[test]
    fn pt_storages_are_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.pt");
        save_pt(&path, &sample()).unwrap();
        let mut zip = ZipArchive::new(File::open(&path).unwrap()).unwrap();
        for i in 0..zip.len() {
            let entry = zip.by_index(i).unwrap();
            if entry.name().starts_with("archive/data/") {
                assert_eq!(entry.data_start() % ALIGNMENT as u64, 0, "{}", entry.name());
            }
        }
    }

    #[test]
    fn unpickle_reads_negative_long() {
        let v = unpickle(&[0x80, 2, 0x8a, 2, 0x00, 0xff, b'.']).unwrap();
        assert_eq!(v.as_int(), Some(-256));
    }
}
