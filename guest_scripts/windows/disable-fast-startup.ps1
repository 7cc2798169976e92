# guestprep-script: disable-fast-startup
# guestprep-output: json
# Fast Startup / hibernation leave NTFS dirty; switch both off (journaled).
$ParamsJson = [string]$args[0]
$p = ConvertFrom-Json -InputObject $ParamsJson
$op = 'windows.fast_startup'
$steps = @()
$steps += Set-RegistryValueJournaled -Operation $op -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager\Power' -Name 'HiberbootEnabled' -Value 0
if ($p.hibernate_off) {
    $before = Get-RegistryValueOrNull -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Power' -Name 'HibernateEnabled'
    if ($before -ne 0) {
        Add-JournalEntry -Operation $op -Kind 'registry_set' -Target 'HKLM:\SYSTEM\CurrentControlSet\Control\Power\HibernateEnabled' -Detail @{ path = 'HKLM:\SYSTEM\CurrentControlSet\Control\Power'; name = 'HibernateEnabled'; before = $before; after = 0 }
        # powercfg also removes hiberfil.sys, which a registry write alone does not
        $r = Invoke-Native -FilePath 'powercfg.exe' -ArgumentList @('/hibernate', 'off')
        if ($r.ExitCode -ne 0) { throw ('powercfg /hibernate off exited ' + $r.ExitCode + ': ' + ($r.StdErr + $r.StdOut).Trim()) }
        $steps += [ordered]@{ target = 'HibernateEnabled'; changed = $true; before = $before; after = 0 }
    }
}
Write-Result -Value ([ordered]@{ ok = $true; steps = $steps })
