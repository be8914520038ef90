using System;
using System.Globalization;

namespace ThpCore.Paging;

/// <summary>The outcome of one page walk: a translation, or the fault the CPU would raise.</summary>
public readonly struct WalkResult
{
    private readonly ulong _physical;
    private readonly ulong _leafRaw;

    internal WalkResult(
        WalkStatus status,
        VirtualAddress address,
        ulong physical,
        PagingLevel level,
        ulong leafRaw,
        EffectiveRights rights,
        PageFaultErrorCode errorCode)
    {
        Status = status;
        Address = address;
        _physical = physical;
        Level = level;
        _leafRaw = leafRaw;
        Rights = rights;
        ErrorCode = errorCode;
    }

    /// <summary>How the walk ended.</summary>
    public WalkStatus Status { get; }

    /// <summary>Whether the address translated and the access is allowed.</summary>
    public bool IsTranslated => Status == WalkStatus.Translated;

    /// <summary>The virtual address that was translated (CR2 on a page fault).</summary>
    public VirtualAddress Address { get; }

    /// <summary>
    /// The level the walk stopped at: the leaf's level on success, the level of the entry that caused a page
    /// fault, or the level whose entry could not be read on <see cref="WalkStatus.PhysicalMemoryError"/>.
    /// </summary>
    public PagingLevel Level { get; }

    /// <summary>The level of the entry that caused the fault (same as <see cref="Level"/>; named for readability).</summary>
    public PagingLevel FaultLevel => Level;

    /// <summary>The translated physical address.</summary>
    /// <exception cref="InvalidOperationException">The walk did not translate.</exception>
    public PhysicalAddress PhysicalAddress => IsTranslated
        ? PhysicalAddress.FromMaskedBits(_physical)
        : throw new InvalidOperationException($"The walk ended in {Status}; there is no physical address.");

    /// <summary>
    /// The physical address of the entry that could not be read (on <see cref="WalkStatus.PhysicalMemoryError"/>).
    /// </summary>
    public PhysicalAddress MissingEntryAddress => Status == WalkStatus.PhysicalMemoryError
        ? PhysicalAddress.FromMaskedBits(_physical)
        : throw new InvalidOperationException("Only a walk that failed to read memory has a missing entry address.");

    /// <summary>The size of the page mapped.</summary>
    /// <exception cref="InvalidOperationException">The walk did not translate.</exception>
    public PageSize PageSize => IsTranslated
        ? (PageSize)((int)Level - 1)
        : throw new InvalidOperationException($"The walk ended in {Status}; there is no page.");

    /// <summary>The leaf entry as read before A/D were set, or on a page fault the entry that faulted (as read).</summary>
    public PageTableEntry Entry => Status is WalkStatus.Translated or WalkStatus.PageFault
        ? new PageTableEntry(Level, _leafRaw)
        : throw new InvalidOperationException($"The walk ended in {Status}; no entry was read at the stopping level.");

    /// <summary>The rights combined over every entry of the walk (on success, or on a protection fault).</summary>
    public EffectiveRights Rights { get; }

    /// <summary>Whether the translation may be written (R/W = 1 at every level).</summary>
    public bool IsWritable => (Rights & EffectiveRights.Writable) != 0;

    /// <summary>Whether the address is a user-mode address (U/S = 1 at every level).</summary>
    public bool IsUser => (Rights & EffectiveRights.User) != 0;

    /// <summary>Whether XD is set at some level (with EFER.NXE = 1).</summary>
    public bool IsExecuteDisable => (Rights & EffectiveRights.ExecuteDisable) != 0;

    /// <summary>The page-fault error code (meaningful for <see cref="WalkStatus.PageFault"/>).</summary>
    public PageFaultErrorCode ErrorCode { get; }

    /// <summary>E.g. <c>0x7f0000001234 -> 0x40001234 (4K, W U)</c> or <c>#PF at PTE, error 0x6 (W U)</c>.</summary>
    public override string ToString() => Status switch
    {
        WalkStatus.Translated => string.Create(CultureInfo.InvariantCulture, $"{Address} -> {PhysicalAddress} ({PageSize.ShortName()}, {DescribeRights(Rights)})"),
        WalkStatus.PageFault => string.Create(CultureInfo.InvariantCulture, $"#PF at {Address}: {Level.EntryName()}, error code 0x{(uint)ErrorCode:x} ({DescribeErrorCode(ErrorCode)})"),
        WalkStatus.GeneralProtection => $"#GP(0): {Address} is not canonical",
        _ => string.Create(CultureInfo.InvariantCulture, $"{Level.EntryName()} at {PhysicalAddress.FromMaskedBits(_physical)} is outside physical memory"),
    };

    /// <summary>The error code as the SDM's flag names, e.g. <c>P W U</c>, or <c>not present</c> for 0.</summary>
    public static string DescribeErrorCode(PageFaultErrorCode code)
    {
        var parts = new System.Collections.Generic.List<string>(6);
        parts.Add((code & PageFaultErrorCode.Present) != 0 ? "P" : "not-present");
        if ((code & PageFaultErrorCode.Write) != 0)
        {
            parts.Add("W");
        }

        if ((code & PageFaultErrorCode.User) != 0)
        {
            parts.Add("U");
        }

        if ((code & PageFaultErrorCode.ReservedBit) != 0)
        {
            parts.Add("RSVD");
        }

        if ((code & PageFaultErrorCode.InstructionFetch) != 0)
        {
            parts.Add("I/D");
        }

        if ((code & PageFaultErrorCode.ProtectionKey) != 0)
        {
            parts.Add("PK");
        }

        return string.Join(' ', parts);
    }

    private static string DescribeRights(EffectiveRights rights) =>
        ((rights & EffectiveRights.Writable) != 0 ? "W" : "R")
        + ((rights & EffectiveRights.User) != 0 ? " U" : " S")
        + ((rights & EffectiveRights.ExecuteDisable) != 0 ? " XD" : " X");
}
