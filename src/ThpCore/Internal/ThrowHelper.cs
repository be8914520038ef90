using System;
using System.Diagnostics.CodeAnalysis;

namespace ThpCore.Internal;

/// <summary>Throw sites kept out of line so that callers on hot paths stay small.</summary>
internal static class ThrowHelper
{
    [DoesNotReturn]
    internal static void ThrowArgument(string paramName, string message) =>
        throw new ArgumentException(message, paramName);

    [DoesNotReturn]
    internal static T ThrowArgument<T>(string paramName, string message) =>
        throw new ArgumentException(message, paramName);

    [DoesNotReturn]
    internal static void ThrowArgumentOutOfRange(string paramName, object? value, string message) =>
        throw new ArgumentOutOfRangeException(paramName, value, message);

    [DoesNotReturn]
    internal static void ThrowInvalidOperation(string message) =>
        throw new InvalidOperationException(message);

    [DoesNotReturn]
    internal static T ThrowInvalidOperation<T>(string message) =>
        throw new InvalidOperationException(message);

    internal static string Hex(ulong value) => "0x" + value.ToString("x", System.Globalization.CultureInfo.InvariantCulture);
}
