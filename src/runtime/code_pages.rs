//! Keep the process server's machine code mapped in every child it forks.
//!
//! `fork` copies no page-table entries for a file-backed mapping, so each child the server
//! forks faults in, again, every page of conc's code and constants it runs: some thirty
//! faults a `fork`, most of what a child costs beyond the fork itself. Anonymous memory is
//! different: its entries are copied, and a 2 MiB huge page is one entry to copy and one to
//! drop at exit. So a server that forks often copies its code and constants, once, into
//! anonymous memory advised for huge pages, and moves the copy over the originals: `mremap`
//! swaps the mapping in one step, the same bytes at the same addresses, so the code doing
//! the swap carries on running in the copy.
//!
//! A huge page must lie within one mapping, on a 2 MiB boundary. The `conc` binary is linked
//! with its segments on 2 MiB boundaries (see `build.rs`) and each mapping is widened to the
//! boundaries around it where the address space is free, so its code fits whole pages. A
//! segment that holds no whole huge page is left alone, as is everything when the kernel
//! gives no huge pages: copied into small pages, code costs about as much to copy at each
//! fork as the faults it saves. Any failure leaves the original mapping as it was.
//!
//! `perf` cannot name functions in anonymous memory; set `CONC_FILE_CODE=1` to keep the
//! server's code file-backed when profiling it.

use nix::sys::mman::{madvise, mmap_anonymous, mprotect, mremap, munmap, MRemapFlags, MapFlags, MmapAdvise, ProtFlags};
use std::ffi::c_void;
use std::io::Read;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

/// The server moves its code once it has forked this many children: a move costs about a
/// millisecond (copying 6 MiB), and each later fork saves some 30 µs.
pub const FORKS_BEFORE_MOVING: u32 = 16;

const PAGE: usize = 4096;

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq)]
struct Mapping {
    start: usize,
    end: usize,
    perms: String,
    offset: usize,
    path: String,
}

fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let (range, perms, offset) = (fields.next()?, fields.next()?, fields.next()?);
            let path = fields.nth(2).unwrap_or("").to_string();
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
                perms: perms.to_string(),
                offset: usize::from_str_radix(offset, 16).ok()?,
                path,
            })
        })
        .collect()
}

/// A `PT_LOAD` program header.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Load {
    offset: usize,
    vaddr: usize,
    memsz: usize,
    writable: bool,
}

/// The loadable segments of a 64-bit little-endian ELF file, from its first bytes.
fn loads(elf: &[u8]) -> Option<Vec<Load>> {
    const PT_LOAD: u32 = 1;
    const PF_W: u32 = 2;
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?) as usize);
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?) as usize);
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64_at(32)?, u16_at(54)?, u16_at(56)?);
    let mut out = Vec::new();
    for i in 0..phnum {
        let p = phoff + i * phentsize;
        if u32_at(p)? == PT_LOAD {
            let writable = u32_at(p + 4)? & PF_W != 0;
            out.push(Load { offset: u64_at(p + 8)?, vaddr: u64_at(p + 16)?, memsz: u64_at(p + 40)?, writable });
        }
    }
    Some(out)
}

/// A range to back by anonymous memory: `mapping` widened to `from..to`.
#[derive(Debug, Clone, PartialEq)]
struct Move {
    mapping: Mapping,
    from: usize,
    to: usize,
}

/// The mappings of `exe`'s read-only segments (code and constants, not the relocated data
/// made read-only after loading), each widened to `huge` boundaries as far as its neighbours
/// leave the address space free; only those that then hold a whole huge page.
fn plan(maps: &[Mapping], exe: &str, loads: &[Load], huge: usize) -> Vec<Move> {
    let page_down = |a: usize| a & !(PAGE - 1);
    let page_up = |a: usize| (a + PAGE - 1) & !(PAGE - 1);
    let Some(first) = loads.iter().min_by_key(|l| l.offset) else { return Vec::new() };
    let Some(base) = maps.iter().find(|m| m.path == exe && m.offset == page_down(first.offset)) else {
        return Vec::new();
    };
    let bias = base.start.wrapping_sub(page_down(first.vaddr));
    let read_only: Vec<(usize, usize)> = loads
        .iter()
        .filter(|l| !l.writable)
        .map(|l| (bias.wrapping_add(page_down(l.vaddr)), bias.wrapping_add(page_up(l.vaddr + l.memsz))))
        .collect();
    let mut out = Vec::new();
    for (i, m) in maps.iter().enumerate() {
        let in_segment = read_only.iter().any(|(s, e)| *s <= m.start && m.end <= *e);
        if m.path != exe || !in_segment || !(m.perms == "r-xp" || m.perms == "r--p") {
            continue;
        }
        let prev_end = if i > 0 { maps[i - 1].end } else { 0 };
        let next_start = maps.get(i + 1).map_or(usize::MAX, |n| n.start);
        let down = m.start & !(huge - 1);
        let up = m.end.div_ceil(huge) * huge;
        let from = if down >= prev_end && down > 0 { down } else { m.start };
        let to = if up <= next_start { up } else { m.end };
        if from.div_ceil(huge) * huge + huge <= to {
            out.push(Move { mapping: m.clone(), from, to });
        }
    }
    out
}

/// The size of a huge page, when the kernel will give them to memory advised to use them.
fn huge_page_size() -> Option<usize> {
    let thp = "/sys/kernel/mm/transparent_hugepage";
    let enabled = std::fs::read_to_string(format!("{thp}/enabled")).ok()?;
    if enabled.contains("[never]") {
        return None;
    }
    let size = std::fs::read_to_string(format!("{thp}/hpage_pmd_size")).ok()?;
    size.trim().parse().ok().filter(|s: &usize| s.is_power_of_two() && *s > PAGE)
}

/// Move the code and constants of this process's executable into anonymous huge pages (see
/// the module docs). Call it only while the process has one thread: another thread could be
/// running code in a range as it moves.
pub fn move_to_anonymous_memory() {
    if std::env::var_os("CONC_FILE_CODE").is_some() || !single_threaded() {
        return;
    }
    let Some(huge) = huge_page_size() else { return };
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else { return };
    let mut header = Vec::new();
    let read = std::fs::File::open("/proc/self/exe").and_then(|f| f.take(64 << 10).read_to_end(&mut header));
    let (Ok(_), Ok(maps)) = (read, std::fs::read_to_string("/proc/self/maps")) else { return };
    let Some(loads) = loads(&header) else { return };
    for mv in plan(&parse_maps(&maps), &exe.to_string_lossy(), &loads, huge) {
        // A range that fails to move stays as it was; the others still pay.
        let _ = replace(&mv, huge);
    }
}

fn single_threaded() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().any(|l| l.split_ascii_whitespace().eq(["Threads:", "1"]))
}

/// Back `mv.from..mv.to` by an anonymous copy of what `mv.mapping` holds.
#[allow(unsafe_code)]
fn replace(mv: &Move, huge: usize) -> nix::Result<()> {
    let (m, len) = (&mv.mapping, mv.to - mv.from);
    let reserve = NonZeroUsize::new(len + huge).ok_or(nix::errno::Errno::EINVAL)?;
    let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    // SAFETY: a new private anonymous mapping, at an address the kernel picks, overlaps
    // nothing in use.
    let base = unsafe { mmap_anonymous(None, reserve, rw, MapFlags::MAP_PRIVATE) }?.as_ptr() as usize;
    // The copy sits as far past a huge-page boundary as its destination does, so the huge
    // pages it gets line up with the destination's boundaries and move as whole pages.
    let copy = base + (mv.from.wrapping_sub(base) & (huge - 1));
    let moved = (|| {
        // SAFETY: `copy..copy + len` lies inside the fresh mapping; the advice only asks
        // for huge pages.
        unsafe { madvise(ptr(copy), len, MmapAdvise::MADV_HUGEPAGE) }?;
        // SAFETY: the source is `m`, mapped readable for as long as the process runs (the
        // executable is never unmapped), and the destination is inside the fresh mapping;
        // the two cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(m.start as *const u8, (copy + m.start - mv.from) as *mut u8, m.end - m.start)
        };
        let prot = if m.perms == "r-xp" { ProtFlags::PROT_READ | ProtFlags::PROT_EXEC } else { ProtFlags::PROT_READ };
        // SAFETY: the copy is ours; it takes the original's protection before it replaces it.
        unsafe { mprotect(ptr(copy), len, prot) }?;
        // SAFETY: MREMAP_FIXED swaps `from..to` for the copy in one step: the same bytes at
        // the same addresses, and `plan` widened the range only into unmapped space. The
        // caller guarantees no other thread runs code from the range meanwhile.
        unsafe {
            mremap(ptr(copy), len, len, MRemapFlags::MREMAP_MAYMOVE | MRemapFlags::MREMAP_FIXED, Some(ptr(mv.from)))
        }
    })();
    let leftovers = match moved {
        Ok(_) => [(base, copy - base), (copy + len, base + len + huge - (copy + len))],
        Err(_) => [(base, len + huge), (0, 0)],
    };
    for (addr, n) in leftovers.into_iter().filter(|(_, n)| *n > 0) {
        // SAFETY: parts of the reservation made above that nothing points into.
        let _ = unsafe { munmap(ptr(addr), n) };
    }
    moved.map(|_| ())
}

fn ptr(addr: usize) -> NonNull<c_void> {
    NonNull::new(addr as *mut c_void).expect("a mapped address is never null")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUGE: usize = 2 << 20;

    /// A conc binary linked with 2 MiB segments: constants, code, relocated data, data.
    const MAPS: &str = "\
55d0a0200000-55d0a02e4000 r--p 00000000 fe:00 123 /usr/bin/conc
55d0a0400000-55d0a071e000 r-xp 00200000 fe:00 123 /usr/bin/conc
55d0a0800000-55d0a0815000 r--p 00600000 fe:00 123 /usr/bin/conc
55d0a0a14000-55d0a0a15000 rw-p 00614000 fe:00 123 /usr/bin/conc
55d0a0a15000-55d0a0a18000 rw-p 00000000 00:00 0
7f0000000000-7f0000100000 r-xp 00026000 fe:00 9 /usr/lib/libc.so.6
";

    fn conc_loads() -> Vec<Load> {
        vec![
            Load { offset: 0, vaddr: 0, memsz: 0xe3538, writable: false },
            Load { offset: 0x200000, vaddr: 0x200000, memsz: 0x31db50, writable: false },
            Load { offset: 0x600000, vaddr: 0x600000, memsz: 0x15000, writable: true },
            Load { offset: 0x614ba0, vaddr: 0x814ba0, memsz: 0x3088, writable: true },
        ]
    }

    #[test]
    fn moves_code_and_constants_widened_to_huge_pages() {
        let maps = parse_maps(MAPS);
        assert_eq!(maps.len(), 6);
        assert_eq!(maps[1].offset, 0x200000);
        let ranges: Vec<(&str, usize, usize)> = plan(&maps, "/usr/bin/conc", &conc_loads(), HUGE)
            .iter()
            .map(|m| (if m.mapping.perms == "r-xp" { "code" } else { "constants" }, m.from, m.to))
            .collect();
        // The relocated data (read-only after loading, in a writable segment) stays.
        assert_eq!(
            ranges,
            vec![("constants", 0x55d0a0200000, 0x55d0a0400000), ("code", 0x55d0a0400000, 0x55d0a0800000)]
        );
    }

    #[test]
    fn leaves_mappings_that_hold_no_whole_huge_page() {
        // Linked without 2 MiB segments: the code crosses a 2 MiB boundary but holds no
        // whole huge page, and its neighbours leave no room to widen it.
        let maps = parse_maps(
            "55d0a02e1000-55d0a03c2000 r--p 00000000 fe:00 1 /x\n\
             55d0a03c2000-55d0a05df000 r-xp 000e1000 fe:00 1 /x\n\
             55d0a05df000-55d0a05f4000 r--p 002fe000 fe:00 1 /x\n",
        );
        let loads = vec![
            Load { offset: 0, vaddr: 0, memsz: 0xe1000, writable: false },
            Load { offset: 0xe1000, vaddr: 0xe1000, memsz: 0x21d000, writable: false },
        ];
        assert_eq!(plan(&maps, "/x", &loads, HUGE), vec![]);
    }

    #[test]
    fn finds_the_segments_of_a_real_executable() {
        let exe = std::fs::read("/proc/self/exe").expect("this test's own binary");
        let loads = loads(&exe).expect("an ELF file");
        assert!(loads.iter().any(|l| !l.writable && l.memsz > 0));
        assert!(loads.iter().any(|l| l.writable));
        assert_eq!(super::loads(b"#!/bin/sh\n"), None);
        assert_eq!(super::loads(&exe[..40]), None);
    }
}
